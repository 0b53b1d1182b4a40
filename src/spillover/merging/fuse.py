"""CPI-FT fusion (methods.md §3.3): core transplant + SLERP of the remaining positions, one tensor at a time.

Inputs are parameter dicts (name → tensor) over the same names and shapes: θ0 (`init`, the model the
probes started from), θ_base (`base`, where fusion starts: the last stage's probe or θ0), the task probes
θ⁽ⁱ⁾ (`tuned`, in stage order) and their core masks C_i. For every tensor:

1. Non-core positions: θ ← θ_base, then for each task in order θ ← slerp(θ, θ⁽ⁱ⁾; ω) over the whole
   flattened tensor (`merging.ops.slerp`, LERP below the angle threshold ε); positions outside every core
   keep this value.
2. Core transplant: every position j in some C_i takes θ⁽ⁱ⁾_j. **Collision rule**: when j lies in several
   cores, the task with the largest update magnitude |θ⁽ⁱ⁾_j − θ0_j| wins; on an exact tie the earlier task
   in stage order wins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from spillover.merging.ops import check_interpolation, slerp


@dataclass
class FusionStats:
    """Per fused model: how many tensors used SLERP vs the LERP fallback (over all task merges), and how
    many core positions each task contributed after collisions (task order)."""

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
    merged = base
    for t in tuned:
        merged, spherical = slerp(merged, t, omega, epsilon)
        if stats is not None:
            stats.n_slerp += int(spherical)
            stats.n_lerp += int(not spherical)
    out = merged.clone()
    best = torch.full(init.shape, -1.0, dtype=torch.float32, device=init.device)
    owner = torch.full(init.shape, -1, dtype=torch.long, device=init.device)
    n_claims = torch.zeros(init.shape, dtype=torch.long, device=init.device)
    for i, (t, core) in enumerate(zip(tuned, cores, strict=True)):
        core = core.to(init.device)
        mag = (t.float() - init.float()).abs()
        take = core & (mag > best)  # strict: an exact tie keeps the earlier task
        out = torch.where(take, t.to(out.dtype), out)
        best = torch.where(take, mag, best)
        owner = torch.where(take, i, owner)
        n_claims += core.long()
    if stats is not None:
        if not stats.transplanted:
            stats.transplanted = [0] * len(tuned)
        for i in range(len(tuned)):
            stats.transplanted[i] += int((owner == i).sum())
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
