"""Shared-prefix packing of a training batch: the tokens every sequence starts with are computed once.

With an instruct model's chat template every training sequence starts with the same system prompt and
task instruction: on the embedded model 42 of sst2's ~74 tokens per sequence. A padded batch of 8 runs
them 8 times. Packed (`models.packing`), a batch becomes R rows of [shared prefix][rest of sequence a]
[rest of sequence b]..., each rest seeing the prefix and itself with its own positions, so every token's
output, and therefore the loss and its gradients, is that of the padded batch up to rounding (the
prefix's gradient is the sum over the sequences that read it, which autograd forms where the rows meet).
sst2 at batch 8: 2 rows of ~170 tokens instead of 8 of ~80.

The prefix stops at least one token before the earliest target, so every position whose logits predict a
target lies in its sequence's own segment; `gather` maps those logits back into the padded batch's
(B, K, V) layout, and objectives see exactly what they would see without packing.

Rows: `n_rows` weighs the tokens the linear layers compute against the attention score pairs of the
longer rows (a row of T tokens costs ~T²/PAIRS_PER_TOKEN tokens' worth of attention), and keeps
`MIN_ROWS` = 2: compiled layers would need graphs of their own for a batch of one row (dynamo
specialises size 1), and eager runs pack the same way, so a compiled and an eager run differ only by the
compile.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from spillover.models.packing import PAD, PAIRS_PER_TOKEN, common_prefix

MIN_SAVING = 0.1  # pack only when it cuts the estimated cost by at least this fraction
MIN_ROWS = 2


@dataclass(frozen=True)
class PackedBatch:
    """Model inputs of the packed rows and the map back to the padded batch."""

    input_ids: Tensor  # (R, W)
    position_ids: Tensor  # (R, W)
    groups: Tensor  # (R, W): 0 shared prefix, b + 1 sequence b's rest, PAD padding
    keep: Tensor  # (R, W) bool: positions whose logits are needed, for `logits_to_keep`
    gather: Tensor  # (B, K) index into the kept logits (row-major over keep) of each padded position
    prefix: int  # shared prefix length


def _cost(width: int, n_rows: int) -> float:
    return n_rows * width + n_rows * width * width / PAIRS_PER_TOKEN


def _assign(rests: list[int], n_rows: int) -> list[list[int]]:
    """Sequences to rows, longest first onto the shortest row (balanced widths); in batch order per row."""
    rows: list[list[int]] = [[] for _ in range(n_rows)]
    totals = [0] * n_rows
    for b in sorted(range(len(rests)), key=lambda b: -rests[b]):
        r = min(range(n_rows), key=totals.__getitem__)
        rows[r].append(b)
        totals[r] += rests[b]
    return [sorted(r) for r in rows]


def plan_rows(prefix: int, lengths: list[int], padded_width: int) -> list[list[int]] | None:
    """Which sequences share which packed row; None when packing would not pay (see the module docstring)."""
    n = len(lengths)
    if prefix == 0:
        return None
    rests = [length - prefix for length in lengths]
    best, best_cost = None, _cost(padded_width, n) * (1 - MIN_SAVING)
    for n_rows in range(MIN_ROWS, n):
        rows = _assign(rests, n_rows)
        cost = _cost(prefix + max(sum(rests[b] for b in r) for r in rows), n_rows)
        if cost < best_cost:
            best, best_cost = rows, cost
    return best


def pack_shared_prefix(input_ids: Tensor, attention_mask: Tensor, n_keep: int) -> PackedBatch | None:
    """Pack a right-padded batch (B, T) whose logits are needed at its last `n_keep` positions (from just
    before the earliest target on, `loop._n_keep`, so before every row's end); None when its rows share
    too little. The shared prefix ends where the needed positions start."""
    lengths = attention_mask.sum(dim=1)
    n, width = input_ids.shape
    start = width - n_keep  # first padded position whose logits are needed
    prefix = common_prefix(input_ids[:, :start].tolist(), start)
    plan = plan_rows(prefix, lengths.tolist(), width)
    if plan is None:
        return None
    row_width = prefix + max(sum(int(lengths[b]) - prefix for b in r) for r in plan)
    ids = torch.zeros((len(plan), row_width), dtype=input_ids.dtype)
    positions = torch.zeros((len(plan), row_width), dtype=torch.long)
    groups = torch.full((len(plan), row_width), PAD, dtype=torch.long)
    keep = torch.zeros((len(plan), row_width), dtype=torch.bool)
    where = torch.zeros((n, width), dtype=torch.long)  # padded (b, t) -> flat packed position
    for r, members in enumerate(plan):
        ids[r, :prefix] = input_ids[members[0], :prefix]
        positions[r, :prefix] = torch.arange(prefix)
        groups[r, :prefix] = 0
        at = prefix
        for b in members:
            length = int(lengths[b])
            span = slice(at, at + length - prefix)
            ids[r, span] = input_ids[b, prefix:length]
            positions[r, span] = torch.arange(prefix, length)
            groups[r, span] = b + 1
            keep[r, at + start - prefix : at + length - prefix] = True
            where[b, prefix:length] = r * row_width + torch.arange(at, at + length - prefix)
            at += length - prefix
    kept_index = keep.flatten().cumsum(0) - 1  # flat packed position -> row of the kept logits
    valid = torch.arange(width)[None, :] < lengths[:, None]
    gather = torch.where(valid, kept_index[where], 0)[:, start:]
    return PackedBatch(ids, positions, groups, keep, gather, prefix)
