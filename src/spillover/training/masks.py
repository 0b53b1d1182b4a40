"""Parameter masks (methods.md §3): which elements of which tensors belong to a task's core region, the set
maths over them, and exact freezing in the training loop.

A mask (`ParamMask`) is a dict from parameter name to a boolean tensor of that parameter's shape; a name
that is absent selects nothing. Masks are built from update magnitudes |θ − θ0| (`update_magnitudes`)
by keeping the top-p% elements, over all tensors at once (`scope="global"`, the paper's setting) or within
every tensor separately (`scope="per_tensor"`).

Memory (a 135M-parameter model: 540 MB per fp32 copy, 135 MB per boolean mask): `flat_update_magnitudes`
lays one model's magnitudes out in a single fp32 vector and `top_p_indices` selects from it, so a caller
can take several tasks' cores one task at a time; the selection (`_top_k`, an exact streamed radix
select) needs 8 bytes per selected element besides its input, where `torch.topk` allocates 16 bytes per
element (2.2 GB at N = 135M). Of the elements tied at the cut, a fixed pseudo-random choice spread evenly over
the positions is kept. An `IndexMask` is a
mask stored as the flat indices of its selected elements (8 bytes per selected element: 11 MB for a 1%
core of 135M parameters) and read as a `ParamMask`, one boolean tensor at a time; `mask_union`,
`mask_size`, `jaccard` and `FreezeHook` use the indices directly.

Exact freezing (`FreezeHook`, a `StepHook` for `training.loop.train`): with mask M of frozen elements the
update is θ_{t+1} = θ_t + Δθ_t ⊙ (1 − M), bit for bit. Zeroing a gradient is not enough under AdamW:
momentum from earlier steps and decoupled weight decay still move the element. So the hook zeroes the
frozen gradients before the step (they then add nothing to the clipping norm or to the moment estimates)
and, after the optimiser step, writes the frozen elements' values saved before the step back: whatever
the optimiser did to them is undone exactly. The optimiser's state for a frozen element may keep decaying;
it is never applied.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping

import torch
from torch import Tensor, nn

from spillover.errors import SpilloverError

ParamMask = dict[str, Tensor]
SCOPES = ("global", "per_tensor")


def _magnitude(name: str, t: Tensor, init: Mapping[str, Tensor]) -> Tensor:
    if name not in init or init[name].shape != t.shape:
        raise SpilloverError(
            f"update magnitude: the start model has no parameter '{name}' of shape {tuple(t.shape)}"
        )
    return (t.detach().float() - init[name].detach().float().to(t.device)).abs()


def update_magnitudes(tuned: Mapping[str, Tensor], init: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """|θ − θ0| per element (fp32), for every name in `tuned` (which `init` must have, same shapes)."""
    return {name: _magnitude(name, t, init) for name, t in tuned.items()}


def flat_update_magnitudes(
    tuned: Mapping[str, Tensor], init: Mapping[str, Tensor]
) -> tuple[Tensor, dict[str, torch.Size]]:
    """`update_magnitudes` laid out in one flat fp32 vector on `init`'s device (every name of `tuned`, in
    its order, each flattened), read from `tuned` one tensor at a time; and the names' shapes in that order.
    Equals `torch.cat` of the flattened `update_magnitudes`, without holding them and their concatenation."""
    shapes, device = {}, torch.device("cpu")
    for name in tuned:
        if name not in init:
            raise SpilloverError(f"update magnitude: the start model has no parameter '{name}'")
        shapes[name], device = init[name].shape, init[name].device
    flat = torch.empty(sum(s.numel() for s in shapes.values()), dtype=torch.float32, device=device)
    at = 0
    for name, shape in shapes.items():
        flat[at : at + shape.numel()] = _magnitude(name, tuned[name], init).flatten()
        at += shape.numel()
    return flat, shapes


def n_selected(n: int, p: float) -> int:
    """How many of `n` elements the top-p% keeps: ceil(p/100 · n), at least 1 (for n ≥ 1)."""
    if not 0.0 < p <= 100.0:
        raise SpilloverError(f"core fraction p={p!r}% is not allowed; use a percentage in (0, 100]")
    return min(n, max(1, math.ceil(p / 100.0 * n - 1e-9)))


def top_p_mask(scores: Mapping[str, Tensor], p: float, scope: str = "global") -> ParamMask:
    """The elements with the largest scores: exactly `n_selected(N, p)` of the N elements of all tensors
    (`global`), or of each tensor's own elements (`per_tensor`). Of the elements tied at the cut, a fixed
    pseudo-random choice spread over the positions is kept (`_top_k`)."""
    _check_scope(scope)
    shapes = {name: s.shape for name, s in scores.items()}
    flat = torch.cat([s.flatten().float() for s in scores.values()]) if scores else torch.zeros(0)
    return dict(top_p_indices(flat, shapes, p, scope))


def top_p_indices(
    flat: Tensor, shapes: Mapping[str, torch.Size], p: float, scope: str = "global"
) -> IndexMask:
    """`top_p_mask` of scores given flat (`flat_update_magnitudes`: the tensors of `shapes`, in that
    order, flattened one after the other), as an `IndexMask`: the same elements, held as indices."""
    _check_scope(scope)
    n = sum(s.numel() for s in shapes.values())
    if flat.numel() != n:
        raise SpilloverError(f"top-p: {flat.numel()} scores for tensors of {n} elements")
    k = n_selected(n, p)
    offsets = [0]
    for shape in shapes.values():
        offsets.append(offsets[-1] + shape.numel())
    if scope == "per_tensor":
        chosen = [
            _top_k(flat[a:b], n_selected(b - a, p)) + a for a, b in zip(offsets, offsets[1:], strict=False)
        ]
        found = torch.cat(chosen) if chosen else torch.zeros(0, dtype=torch.int64, device=flat.device)
    else:
        found = _top_k(flat, k, report=True)
    cuts = torch.searchsorted(found, torch.tensor(offsets, dtype=found.dtype, device=found.device)).tolist()
    indices = {}
    for name, a, lo, hi in zip(shapes, offsets, cuts, cuts[1:], strict=False):
        if hi > lo:
            indices[name] = found[lo:hi] - a
    return IndexMask(indices, shapes)


def _check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise SpilloverError(f"mask scope '{scope}' is not allowed; use one of: {', '.join(SCOPES)}")


log = logging.getLogger(__name__)
CHUNK = 1 << 22  # elements per step of `_top_k`'s passes: 4M (32 MB of int64 keys)
BUCKETS = 1 << 16


def _top_k(flat: Tensor, k: int, report: bool = False) -> Tensor:
    """The positions of the k largest entries of flat (N,), as sorted int64 (k,). Of the entries equal to
    the k-th largest, those with the largest `_tie_hash` of their position are kept: a fixed pseudo-random
    order, spread evenly over the positions (fine-tuning updates tie often: in the multitask example
    204k–320k elements share the value at each 1% cut of 1.35M, and keeping the lowest positions would pile
    a core's ties into the first tensors, the embedding and the first layers).

    Written by hand because `torch.topk` (like `kthvalue` and `sort`) allocates 8–16 bytes per input element
    (2.2 GB at N = 135M), which set the multitask study's peak memory. This is an exact radix select on the
    values' order-preserving integer keys (`_keys`), streamed over chunks of `CHUNK` elements (`_select`: one
    pass per 16 bits), then the same select over the tied entries' position hashes, and one pass that
    collects the selected positions. Extra memory: 8 bytes per selected element and a few chunks. `report`:
    log how many elements tied at the cut."""
    n = flat.numel()
    if not 0 < k <= n:
        raise SpilloverError(f"top-k: k={k} of {n} elements")
    if n >= 1 << 32:  # `_tie_hash` is a bijection below 2³² only
        raise SpilloverError(f"top-k over {n} elements (≥ 2³²) at once: select per tensor (scope per_tensor)")
    cut, need, tied = _select(lambda: _keys(flat), k)
    if report:
        log.info("top-k: %d of %d elements; %d of the %d tied at the cut kept", k, n, need, tied)

    def tie_hashes() -> Iterator[Tensor]:
        for start, keys in zip(range(0, n, CHUNK), _keys(flat), strict=True):
            yield _tie_hash(torch.nonzero(keys == cut).flatten() + start)

    tie_cut, _, _ = _select(tie_hashes, need)  # hashes are distinct: exactly `need` reach tie_cut
    chosen = []
    for start, keys in zip(range(0, n, CHUNK), _keys(flat), strict=True):
        tied = torch.nonzero(keys == cut).flatten() + start
        chosen += [torch.nonzero(keys > cut).flatten() + start, tied[_tie_hash(tied) >= tie_cut]]
    return torch.cat(chosen).sort().values


def _select(chunks: Callable[[], Iterator[Tensor]], k: int) -> tuple[int, int, int]:
    """(t, j, m): the k-th largest t of the keys in [0, 2³²) that `chunks()` yields (called once per pass),
    how many keys equal to t the k largest include, and how many keys equal t."""
    high, need = _kth_bucket(sum(torch.bincount(c >> 16, minlength=BUCKETS) for c in chunks()), k)
    low_counts = sum(torch.bincount(c[c >> 16 == high] & 0xFFFF, minlength=BUCKETS) for c in chunks())
    low, need = _kth_bucket(low_counts, need)
    return (high << 16) | low, need, int(low_counts[low])


def _tie_hash(positions: Tensor) -> Tensor:
    """A bijection of positions below 2³² onto [0, 2³²) that scatters neighbours (multiplication by an odd
    constant, Knuth's golden-ratio multiplier, modulo 2³²): distinct positions get distinct hashes."""
    return (positions * 0x9E3779B1) & 0xFFFFFFFF


def _keys(flat: Tensor) -> Iterator[Tensor]:
    """`flat`'s values chunk by chunk as int64 keys in [0, 2³²) ordered as the float32 values are: the bit
    pattern as int32, its magnitude bits flipped for negatives (so a more negative value gets a smaller
    key), shifted by 2³¹ to be non-negative."""
    for start in range(0, flat.numel(), CHUNK):
        bits = (flat[start : start + CHUNK].float() + 0.0).view(torch.int32)  # + 0.0: -0.0 ties with 0.0
        yield (bits ^ ((bits >> 31) & 0x7FFFFFFF)).long() + (1 << 31)


def _kth_bucket(counts: Tensor, k: int) -> tuple[int, int]:
    """(b, j): the bucket b holding the k-th largest key given per-bucket counts, and which of its keys
    that is, counted from its largest (j = k minus the keys in higher buckets)."""
    at_least = counts.flip(0).cumsum(0).flip(0)  # at_least[b] = keys in bucket b or higher
    bucket = int(torch.nonzero(at_least >= k).max())
    return bucket, k - int(at_least[bucket] - counts[bucket])


class IndexMask(Mapping):
    """A `ParamMask` stored as its selected elements' flat indices per tensor (`mask_to_indices`) and every
    parameter's shape: reading a name builds its boolean tensor (all False for a name without indices), so
    only the tensors in use are held as booleans (on the CPU). `indices`: name → sorted int64 on the CPU
    (names with none absent)."""

    def __init__(self, indices: Mapping[str, Tensor], shapes: Mapping[str, torch.Size]) -> None:
        unknown = sorted(set(indices) - set(shapes))
        if unknown:
            raise SpilloverError(f"mask indices for parameters of unknown shape: {unknown[:3]}")
        self.indices = {name: i.to("cpu", torch.int64) for name, i in indices.items() if i.numel()}
        self.shapes = {name: torch.Size(s) for name, s in shapes.items()}

    @classmethod
    def from_mask(cls, mask: Mapping[str, Tensor]) -> IndexMask:
        if isinstance(mask, IndexMask):
            return mask
        return cls(mask_to_indices(mask), {name: m.shape for name, m in mask.items()})

    def __getitem__(self, name: str) -> Tensor:
        shape = self.shapes[name]
        m = torch.zeros(shape.numel(), dtype=torch.bool)
        if name in self.indices:
            m[self.indices[name]] = True
        return m.view(shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)

    def size(self) -> int:
        return sum(i.numel() for i in self.indices.values())


def mask_size(mask: Mapping[str, Tensor]) -> int:
    if isinstance(mask, IndexMask):
        return mask.size()
    return sum(int(m.sum()) for m in mask.values())


def mask_union(masks: Iterable[Mapping[str, Tensor]]) -> ParamMask:
    """Elementwise OR over masks (a name missing from a mask counts as all False). Of `IndexMask`s only:
    an `IndexMask` (the union of the indices), never the boolean tensors."""
    masks = list(masks)
    if masks and all(isinstance(m, IndexMask) for m in masks):
        shapes = {name: s for m in masks for name, s in m.shapes.items()}
        parts: dict[str, list[Tensor]] = {}
        for m in masks:
            for name, i in m.indices.items():
                parts.setdefault(name, []).append(i)
        return IndexMask({name: torch.cat(i).unique(sorted=True) for name, i in parts.items()}, shapes)
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
    if isinstance(a, IndexMask) and isinstance(b, IndexMask):
        inter = sum(
            int(torch.isin(i, b.indices[name], assume_unique=True).sum())
            for name, i in a.indices.items()
            if name in b.indices
        )
    else:
        inter = mask_size(mask_intersection(a, b))
    union = mask_size(a) + mask_size(b) - inter
    return 1.0 if union == 0 else inter / union


def mask_to_indices(mask: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Compact storage: per name, the flat int64 indices of the True elements (names with none dropped)."""
    if isinstance(mask, IndexMask):
        return dict(mask.indices)
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
    Memory: the frozen elements' flat indices (`IndexMask`) and, during a step, one saved copy of their
    values.
    """

    def __init__(self, frozen: Mapping[str, Tensor]) -> None:
        self.frozen = IndexMask.from_mask(frozen).indices
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
        for name, i in self.frozen.items():
            p = params[name]
            i = i.to(p.device)
            if p.grad is not None:
                p.grad.view(-1)[i] = 0
            self._saved[name] = p.view(-1)[i]  # indexing copies

    @torch.no_grad()
    def after_optimizer_step(self, model: nn.Module, optimizer, step: int) -> None:
        params = self._params(model)
        for name, i in self.frozen.items():
            p = params[name]
            p.view(-1)[i.to(p.device)] = self._saved.pop(name)
