"""Packed rows: several token segments in one row, each seeing only what it would see on its own.

Used by training, where the sequences of a batch start with the same tokens (an instruct model's chat
template puts its system prompt and the task's instruction in front of every example: 40–52 tokens, half of
a classification prompt, on the embedded model), and by scoring, which feeds an example's answer options
side by side. A row holds a shared prefix (group 0) and after it the segments of several sequences
(groups 1, 2, ...); within a group, branch 0 is seen by the group's other branches (an example's context,
seen by each of its options), other branches see only themselves. `position_ids` restart for every segment
at the position it would have on its own. The model's output at every position is then that of the
sequence alone (tested against separate forwards), while the shared tokens are computed once.

transformers passes a ready 4-D mask through unchanged (documented for `attention_mask` of 4 dimensions);
both `sdpa` and `eager` attention (the implementations spillover loads models with, `models.load`) take it
in additive form (0 = attend, the dtype's minimum = masked), so that is the form `model_mask` builds, and
spillover never needs to ask the model which implementation it runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

PAD = -1  # group id of padding
# Attention score pairs (query × key, all heads) that cost about as much as one token through the linear
# layers (training's rows, `training.shared_prefix`). FLOPs alone say ~3,000 on the embedded model
# (2 · 3.5M layer weights vs 4 · 576 per pair), but the mask add, softmax and bmm of attention run well
# below matmul speed. Measured when scoring still packed several examples behind one prefix (it now reads
# a cached prefix instead): the optimum is broad; scoring sst2's 1000 rows (chat template) with 300 /
# 1,000 / 3,000 / 10,000 took 22.6, 29.8 / 21.3, 21.5 / 17.6, 25.8 / 19.3, 25.1 s (two alternating runs
# each, compiled, bf16), within this VM's noise.
PAIRS_PER_TOKEN = 1000


def common_prefix(sequences: Sequence[Sequence[int]], limit: int) -> int:
    """How many leading tokens all `sequences` share, at most `limit`."""
    first, n = sequences[0], 0
    while n < limit and all(s[n] == first[n] for s in sequences):
        n += 1
    return n


def tree_attention_mask(groups: torch.Tensor, branches: torch.Tensor | None = None) -> torch.Tensor:
    """groups, branches: (B, T) -> boolean mask (B, 1, T, T), True where the query may attend the key.

    Causal, and a key is visible if it is in the shared prefix (group 0), or in the query's group and in
    branch 0 or the query's own branch. Padding (group `PAD`) is never visible; every row keeps its
    diagonal so padding queries never attend to nothing (an all-masked row gives NaN).
    """
    n = groups.shape[1]
    q, k = groups[:, :, None], groups[:, None, :]
    same = k == q
    if branches is not None:
        qb, kb = branches[:, :, None], branches[:, None, :]
        same &= (kb == 0) | (kb == qb)
    causal = torch.ones(n, n, dtype=torch.bool, device=groups.device).tril()
    visible = ((k == 0) | same) & (k != PAD) & causal
    visible |= torch.eye(n, dtype=torch.bool, device=groups.device)
    return visible[:, None]


def model_mask(model, mask: torch.Tensor) -> torch.Tensor:
    """The 4-D boolean `mask` in additive form (0 / dtype minimum, in the input embeddings' dtype, as
    transformers builds it), which `sdpa` and `eager` attention both read."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    dtype = embeddings.weight.dtype if embeddings is not None else next(model.parameters()).dtype
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
