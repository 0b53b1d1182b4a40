"""Training objectives: pure functions from logits and labels to a summed loss, a token count and stats.

Every objective has the signature `(logits: (B, T, V), labels: (B, T), **params) -> ObjectiveOutput` and
does the causal shift itself (logits at position t predict the label at t + 1); labels are -100 on prompt
and padding tokens (see `spillover.data.collate`). Objectives return a *sum* over target tokens, never a
mean: the loop divides by the number of target tokens of the whole optimiser step, so gradient
accumulation over micro-batches equals one large batch exactly.

Log-probabilities are computed in fp32 even when the logits come out of bf16 autocast, and only at target
positions: the (B, T, V) logits are never copied to fp32 as a whole (the vocabulary may be 49k+).

Future objectives slot in as one function each: TALR weights the per-token NLL from `target_nll` by
detached `p ** (1/tau)`; FLOW weights it per sequence using the `rows` index `target_nll` also returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from spillover.data.collate import IGNORE
from spillover.registry import Registry


@dataclass(frozen=True)
class ObjectiveOutput:
    """`loss_sum`: scalar tensor (sum over target tokens); `stats`: token-means over this batch."""

    loss_sum: Tensor
    n_tokens: int
    stats: dict[str, float] = field(default_factory=dict)


Objective = Callable[..., ObjectiveOutput]
OBJECTIVES: Registry[Objective] = Registry("objective")


class TargetTokens(NamedTuple):
    """The N target tokens of a batch after the causal shift."""

    nll: Tensor  # (N,) fp32 negative log-likelihood
    rows: Tensor  # (N,) batch row (sequence) of each token
    ids: Tensor  # (N,) target token ids
    logits: Tensor  # (N, V) the logits that predict them, in the logits' own dtype


def target_nll(logits: Tensor, labels: Tensor) -> TargetTokens:
    """Pick the target positions out of logits (B, T, V) / labels (B, T) and score them in fp32.

    Only the (N, V) target rows are upcast, never the whole (B, T, V) tensor.
    """
    targets = labels[:, 1:]
    keep = targets != IGNORE
    selected = logits[:, :-1][keep]
    ids = targets[keep]
    nll = F.cross_entropy(selected.float(), ids, reduction="none")
    return TargetTokens(nll, keep.nonzero()[:, 0], ids, selected)


@OBJECTIVES.register("cross_entropy")
def cross_entropy(logits: Tensor, labels: Tensor) -> ObjectiveOutput:
    """Plain SFT: loss_sum = Σ −log p(target token). Stats: `token_acc` (argmax == target)."""
    t = target_nll(logits, labels)
    n = int(t.nll.numel())
    with torch.no_grad():
        acc = (t.logits.argmax(-1) == t.ids).float().mean().item() if n else 0.0
    return ObjectiveOutput(t.nll.sum(), n, {"token_acc": acc})


def count_targets(labels: Tensor) -> int:
    """Number of tokens that carry loss after the causal shift. labels: (B, T)."""
    return int((labels[:, 1:] != IGNORE).sum())
