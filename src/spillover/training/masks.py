"""Parameter masks (methods.md §3): which elements of which tensors belong to a task's core region, the set
maths over them, and exact freezing in the training loop.

A mask (`ParamMask`) is a dict from parameter name to a boolean tensor of that parameter's shape; a name
that is absent selects nothing. Masks are built from update magnitudes |θ − θ0| (`update_magnitudes`)
by keeping the top-p% elements, over all tensors at once (`scope="global"`, the paper's setting) or within
every tensor separately (`scope="per_tensor"`).

Exact freezing (`FreezeHook`, a `StepHook` for `training.loop.train`): with mask M of frozen elements the
update is θ_{t+1} = θ_t + Δθ_t ⊙ (1 − M), bit for bit. Zeroing a gradient is not enough under AdamW:
momentum from earlier steps and decoupled weight decay still move the element. So the hook zeroes the
frozen gradients before the step (they then add nothing to the clipping norm or to the moment estimates)
and, after the optimiser step, writes the frozen elements' values saved before the step back: whatever
the optimiser did to them is undone exactly. The optimiser's state for a frozen element may keep decaying;
it is never applied.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from spillover.errors import SpilloverError

ParamMask = dict[str, Tensor]
SCOPES = ("global", "per_tensor")


def update_magnitudes(tuned: Mapping[str, Tensor], init: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """|θ − θ0| per element (fp32), for every name in `tuned` (which `init` must have, same shapes)."""
    out = {}
    for name, t in tuned.items():
        if name not in init or init[name].shape != t.shape:
            raise SpilloverError(
                f"update magnitude: the start model has no parameter '{name}' of shape {tuple(t.shape)}"
            )
        out[name] = (t.detach().float() - init[name].detach().float().to(t.device)).abs()
    return out


def n_selected(n: int, p: float) -> int:
    """How many of `n` elements the top-p% keeps: ceil(p/100 · n), at least 1 (for n ≥ 1)."""
    if not 0.0 < p <= 100.0:
        raise SpilloverError(f"core fraction p={p!r}% is not allowed; use a percentage in (0, 100]")
    return min(n, max(1, math.ceil(p / 100.0 * n - 1e-9)))


def top_p_mask(scores: Mapping[str, Tensor], p: float, scope: str = "global") -> ParamMask:
    """The elements with the largest scores: exactly `n_selected(N, p)` of the N elements of all tensors
    (`global`), or of each tensor's own elements (`per_tensor`). Ties at the cut are broken by torch.topk."""
    if scope not in SCOPES:
        raise SpilloverError(f"mask scope '{scope}' is not allowed; use one of: {', '.join(SCOPES)}")
    if scope == "per_tensor":
        return {
            name: _top_k(s.flatten(), n_selected(s.numel(), p)).view(s.shape) for name, s in scores.items()
        }
    names = list(scores)
    flat = torch.cat([scores[n].flatten().float() for n in names])
    chosen = _top_k(flat, n_selected(flat.numel(), p))
    out, at = {}, 0
    for name in names:
        size = scores[name].numel()
        out[name] = chosen[at : at + size].view(scores[name].shape)
        at += size
    return out


def _top_k(flat: Tensor, k: int) -> Tensor:
    """(N,) bool with True at the k largest entries of flat: (N,)."""
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    mask[torch.topk(flat, k, sorted=False).indices] = True
    return mask


def mask_size(mask: Mapping[str, Tensor]) -> int:
    return sum(int(m.sum()) for m in mask.values())


def mask_union(masks: Iterable[Mapping[str, Tensor]]) -> ParamMask:
    """Elementwise OR over masks (a name missing from a mask counts as all False)."""
    out: ParamMask = {}
    for mask in masks:
        for name, m in mask.items():
            out[name] = out[name] | m if name in out else m.clone()
    return out


def mask_intersection(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> ParamMask:
    """Elementwise AND; only names present in both."""
    return {name: a[name] & b[name] for name in a if name in b}


def jaccard(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    """|A ∩ B| / |A ∪ B|; 1.0 when both are empty (identical sets)."""
    inter = mask_size(mask_intersection(a, b))
    union = mask_size(a) + mask_size(b) - inter
    return 1.0 if union == 0 else inter / union


def mask_to_indices(mask: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Compact storage: per name, the flat int64 indices of the True elements (names with none dropped)."""
    return {name: m.flatten().nonzero().flatten() for name, m in mask.items() if bool(m.any())}


def mask_from_indices(indices: Mapping[str, Tensor], shapes: Mapping[str, torch.Size]) -> ParamMask:
    """Inverse of `mask_to_indices`, given every parameter's shape (absent names: all False)."""
    out = {}
    for name, shape in shapes.items():
        m = torch.zeros(math.prod(shape), dtype=torch.bool)
        if name in indices:
            m[indices[name]] = True
        out[name] = m.view(shape)
    return out


class FreezeHook:
    """Keeps the elements selected by `frozen` exactly where they are during `train` (see the module doc).

    `frozen`: mask over the model's parameter names (as `named_parameters()` gives them); names not
    among the model's trainable parameters are an error, so a mask never silently selects nothing.
    Memory: one saved copy of the frozen elements only.
    """

    def __init__(self, frozen: Mapping[str, Tensor]) -> None:
        self.frozen = {name: m for name, m in frozen.items() if bool(m.any())}
        self._saved: dict[str, Tensor] = {}

    def _params(self, model: nn.Module) -> dict[str, nn.Parameter]:
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        missing = sorted(set(self.frozen) - set(params))
        if missing:
            raise SpilloverError(f"freeze mask names parameters the model does not train: {missing[:3]}")
        return params

    @torch.no_grad()
    def before_optimizer_step(self, model: nn.Module, optimizer, step: int) -> None:
        params = self._params(model)
        for name, m in self.frozen.items():
            p = params[name]
            m = m.to(p.device)
            if p.grad is not None:
                p.grad[m] = 0
            self._saved[name] = p[m].clone()

    @torch.no_grad()
    def after_optimizer_step(self, model: nn.Module, optimizer, step: int) -> None:
        params = self._params(model)
        for name, m in self.frozen.items():
            params[name][m.to(params[name].device)] = self._saved.pop(name)
