"""CPI-FT fusion (methods.md §3.3): core transplant + SLERP of the remaining positions, one tensor at a time.

Inputs are parameter dicts (name → tensor) over the same names and shapes: θ0 (`init`, the model the
probes started from), θ_base (`base`, where fusion starts: the last stage's probe or θ0), the task probes
θ⁽ⁱ⁾ (`tuned`) and their core masks C_i. For every tensor:

1. Non-core positions: θ ← slerp(θ_base, θ̄; ω) over the whole flattened tensor, where θ̄ = (1/n) Σ_i θ⁽ⁱ⁾
   is the equal-weight mean of the probes (θ0 plus the mean task vector; `merging.ops.slerp`, LERP below
   the angle threshold ε); positions outside every core keep this value. Every task weighs 1/n, so the
   result does not depend on the order of the tasks (a chain of pairwise SLERPs would weigh three tasks
   0.125 / 0.25 / 0.625 and let the stage order decide the merge).
2. Core transplant: every position j in some C_i takes θ⁽ⁱ⁾_j. **Collision rule**: when j lies in several
   cores, the task with the largest update magnitude |θ⁽ⁱ⁾_j − θ0_j| wins; on an exact tie the tied tasks'
   values are averaged (again independent of task order).

Only θ_base can make the result depend on which task is "last" (`fusion_base: last_probe`); for a given
θ_base, permuting `tuned` together with `cores` leaves the fused tensors unchanged (up to fp32 rounding of
the mean, which is taken in float64).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from spillover.merging.ops import check_interpolation, mean_tensor, slerp


@dataclass
class FusionStats:
    """Per fused model: how many tensors used SLERP vs the LERP fallback (one merge per tensor), how many
    core positions each task contributed after collisions (a position shared by an exact tie counts for
    every tied task), and how many positions lie in more than one core."""

    n_slerp: int = 0
    n_lerp: int = 0
    transplanted: list[int] = field(default_factory=list)
    collisions: int = 0


def fuse_tensor(
    init: Tensor,
    base: Tensor,
    tuned: Sequence[Tensor],
    cores: Sequence[Tensor],
    omega: float,
    epsilon: float,
    stats: FusionStats | None = None,
) -> Tensor:
    """One parameter: all tensors of one shape; cores: bool of that shape. Returns base's dtype."""
    merged, spherical = slerp(base, mean_tensor(tuned), omega, epsilon)
    if stats is not None:
        stats.n_slerp += int(spherical)
        stats.n_lerp += int(not spherical)
    return transplant_cores(init, merged, tuned, cores, stats)


def transplant_cores(
    init: Tensor,
    merged: Tensor,
    tuned: Sequence[Tensor],
    cores: Sequence[Tensor],
    stats: FusionStats | None = None,
) -> Tensor:
    """`merged` with every core position j set to the winning task's θ⁽ⁱ⁾_j (largest |θ⁽ⁱ⁾_j − θ0_j|; an
    exact tie averages the tied values). Two passes over the tasks, so at most a few tensors of one
    parameter's size are alive at once. Returns merged's dtype."""
    cores = [c.to(init.device) for c in cores]

    def magnitude(t: Tensor) -> Tensor:
        return (t.float() - init.float()).abs()

    best = torch.full(init.shape, -1.0, dtype=torch.float32, device=init.device)
    for t, core in zip(tuned, cores, strict=True):
        best = torch.maximum(best, torch.where(core, magnitude(t), -1.0))
    total = torch.zeros(init.shape, dtype=torch.float64, device=init.device)
    n_winners = torch.zeros(init.shape, dtype=torch.int32, device=init.device)
    n_claims = torch.zeros(init.shape, dtype=torch.int32, device=init.device)
    wins = []
    for t, core in zip(tuned, cores, strict=True):
        win = core & (magnitude(t) == best)
        total += torch.where(win, t.double(), 0.0)
        n_winners += win
        n_claims += core
        wins.append(int(win.sum()))
    out = torch.where(n_winners > 0, (total / n_winners.clamp(min=1)).to(merged.dtype), merged)
    if stats is not None:
        if not stats.transplanted:
            stats.transplanted = [0] * len(tuned)
        stats.transplanted = [a + b for a, b in zip(stats.transplanted, wins, strict=True)]
        stats.collisions += int((n_claims > 1).sum())
    return out


def fuse_models(
    init: Mapping[str, Tensor],
    base: Mapping[str, Tensor],
    tuned: Sequence[Mapping[str, Tensor]],
    cores: Sequence[Mapping[str, Tensor]],
    omega: float,
    epsilon: float,
) -> tuple[dict[str, Tensor], FusionStats]:
    """The fused parameters for every name of `base` (see the module doc) and the fusion statistics.
    A name missing from a task's core mask has no core positions for that task."""
    check_interpolation(omega, epsilon)
    stats = FusionStats(transplanted=[0] * len(tuned))
    out = {}
    for name, b in base.items():
        masks = [c.get(name, torch.zeros(b.shape, dtype=torch.bool)) for c in cores]
        out[name] = fuse_tensor(init[name], b, [t[name] for t in tuned], masks, omega, epsilon, stats)
    return out, stats
