"""Training objectives: pure functions from logits and labels to a summed loss, a token count and stats.

Every objective has the signature `(logits: (B, T, V), labels: (B, T), **params) -> ObjectiveOutput` and
does the causal shift itself (logits at position t predict the label at t + 1); labels are -100 on prompt
and padding tokens (see `spillover.data.collate`). Objectives return a *sum* over target tokens, never a
mean: the loop divides by the number of target tokens of the whole optimiser step, so gradient
accumulation over micro-batches equals one large batch exactly.

Log-probabilities are computed in fp32 even when the logits come out of bf16 autocast, and only at target
positions: the (B, T, V) logits are never copied to fp32 as a whole (the vocabulary may be 49k+).

Reweighted objectives (methods.md §4.3–4.4) keep that contract: `talr` weights each target token's NLL by
a detached `p ** (1/τ)`, `flow` each sequence's tokens by a weight fixed before training (`training.flow`).
Both return `Σ w_i ℓ_i`, so after the loop's division the step loss is `Σ w_i ℓ_i / Σ 1` — by default the
TALR weights are *not* renormalised to sum to the token count, and a step whose tokens are all hard has a
small loss (mean weight < 1: a smaller effective step than cross-entropy at the same learning rate).
`talr` with `normalize: true` rescales its weights to mean 1 over the batch's target tokens, so TALR only
redistributes the step across tokens and "TALR vs CE at lr" compares reweighting alone.
An objective that declares a `sequence_weights` parameter receives its micro-batch's (B,) weights from
the loop.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from spillover.data.collate import IGNORE
from spillover.errors import SpilloverError
from spillover.registry import Registry, check_params


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
    return ObjectiveOutput(t.nll.sum(), int(t.nll.numel()), _token_acc(t))


def talr_weights(
    nll: Tensor, rows: Tensor, tau: float | None = None, floor: float = 0.0
) -> tuple[Tensor, float]:
    """TALR token weights w_i = max(p_i^(1/τ), floor) = max(exp(−ℓ_i/τ), floor), detached, and τ.

    nll: (N,) per-token loss ℓ_i; rows: (N,) sequence of each token. τ = `tau` when given, else the median
    (torch.quantile, i.e. the mean of the two middle values for an even count) over the batch's sequences
    of their mean token loss. This is the closed-form solution of min_w Σ w_i ℓ_i − τ·H(w) on the simplex,
    unnormalised (methods.md §4.3).
    """
    nll = nll.detach()
    if tau is None:
        tau = float(torch.quantile(_sequence_means(nll, rows), 0.5)) if nll.numel() else 1.0
    w = torch.exp(-nll / max(tau, _MIN_TAU))  # exp(−ℓ/τ) = p^(1/τ), computed without forming p
    return w.clamp(min=floor), tau


_MIN_TAU = 1e-6  # a batch the model already predicts perfectly has τ = 0; p^(1/0⁺) is then 1 or 0


def _sequence_means(nll: Tensor, rows: Tensor) -> Tensor:
    """Mean of `nll` (N,) over the tokens of each sequence present in `rows` (N,): (S,)."""
    _, index = torch.unique(rows, return_inverse=True)
    n_seq = int(index.max()) + 1
    sums = torch.zeros(n_seq, dtype=nll.dtype, device=nll.device).index_add_(0, index, nll)
    counts = torch.zeros(n_seq, dtype=nll.dtype, device=nll.device).index_add_(0, index, torch.ones_like(nll))
    return sums / counts


def _check_params(name: str, tau: float | None, floor: float = 0.0) -> None:
    if tau is not None and not (isinstance(tau, int | float) and tau > 0):
        raise SpilloverError(f"objective {name}: tau={tau!r} is not allowed; use a number > 0 or null")
    if not (isinstance(floor, int | float) and 0.0 <= floor <= 1.0):
        raise SpilloverError(f"objective {name}: floor={floor!r} is not allowed; use a number in [0, 1]")


def normalize_weights(w: Tensor) -> Tensor:
    """w (N,) rescaled to mean 1: w · N / Σ w (unchanged when empty; all-zero weights become all ones,
    the only mean-1 rescaling of a constant)."""
    if not w.numel():
        return w
    total = w.sum()
    return w * (w.numel() / total) if float(total) > 0 else torch.ones_like(w)


@OBJECTIVES.register("talr")
def talr(
    logits: Tensor, labels: Tensor, tau: float | None = None, floor: float = 0.0, normalize: bool = False
) -> ObjectiveOutput:
    """Token-adaptive loss reweighting: loss_sum = Σ w_i ℓ_i with w from `talr_weights` (no gradient
    through w, so ∂loss/∂θ = Σ w_i ∂ℓ_i/∂θ). τ is per call, i.e. per micro-batch when grad_accum > 1.
    `normalize`: rescale the weights (after the floor) to mean 1 over this call's N target tokens,
    w_i ← w_i · N / Σ_j w_j (`normalize_weights`), so Σ w_i = N, as for cross-entropy; per micro-batch too.

    Stats (token means over the step): `talr/tau`, `talr/w_mean` (1 when normalised),
    `talr/w_p10|p50|p90` (weight quantiles), `talr/frac_floor` (tokens at the floor), `talr/nll` (the
    unweighted loss), `token_acc`; with `normalize`, also `talr/w_raw_mean` (mean weight before rescaling).
    """
    _check_params("talr", tau, floor)
    t = target_nll(logits, labels)
    w, tau_used = talr_weights(t.nll, t.rows, tau, floor)
    raw_mean = w.mean().item() if w.numel() else 0.0
    at_floor = (w <= floor).float().mean().item() if floor > 0 and w.numel() else 0.0
    if normalize:
        w = normalize_weights(w)
    stats = _token_acc(t)
    if t.nll.numel():
        q = torch.quantile(w, torch.tensor([0.1, 0.5, 0.9], device=w.device)).tolist()
        stats |= {
            "talr/tau": tau_used,
            "talr/w_mean": w.mean().item(),
            "talr/w_p10": q[0],
            "talr/w_p50": q[1],
            "talr/w_p90": q[2],
            "talr/frac_floor": at_floor,
            "talr/nll": t.nll.detach().mean().item(),
        }
        if normalize:
            stats["talr/w_raw_mean"] = raw_mean
    return ObjectiveOutput((w * t.nll).sum(), int(t.nll.numel()), stats)


@OBJECTIVES.register("flow")
def flow(
    logits: Tensor, labels: Tensor, sequence_weights: Tensor, tau: float | None = None
) -> ObjectiveOutput:
    """FLOW: loss_sum = Σ_s w_s Σ_{i∈s} ℓ_i with per-sequence weights w_s (B,) fixed before training.

    The weights come from the base model (`training.flow.flow_weights`: exp(−L_s/τ), mean 1 over the
    dataset); the loop passes the micro-batch's slice. `tau` is the temperature they were computed with; it
    is not used here. Stats: `flow/w_mean` (token mean of the weights), `flow/nll`, `token_acc`.
    """
    _check_params("flow", tau)
    t = target_nll(logits, labels)
    w = sequence_weights.detach().to(device=t.nll.device, dtype=t.nll.dtype)[t.rows]
    stats = _token_acc(t)
    if t.nll.numel():
        stats |= {"flow/w_mean": w.mean().item(), "flow/nll": t.nll.detach().mean().item()}
    return ObjectiveOutput((w * t.nll).sum(), int(t.nll.numel()), stats)


def _token_acc(t: TargetTokens) -> dict[str, float]:
    with torch.no_grad():
        return {"token_acc": (t.logits.argmax(-1) == t.ids).float().mean().item() if t.nll.numel() else 0.0}


def count_targets(labels: Tensor) -> int:
    """Number of tokens that carry loss after the causal shift. labels: (B, T)."""
    return int((labels[:, 1:] != IGNORE).sum())


def check_objective_params(name: str, params: dict) -> None:
    """Fail early (at the config edge) on unknown or bad parameters: names and types against the signature
    (registry.check_params; `sequence_weights` is supplied by the loop, not the user), then value ranges by
    running the objective on a 1-token batch."""
    fn = OBJECTIVES.get(name)
    signature = inspect.signature(fn, eval_str=True)
    user = {k: p for k, p in list(signature.parameters.items())[2:] if k != "sequence_weights"}
    check_params("objective", name, _with_params(fn, user), params, skip=0)
    extra = {"sequence_weights": torch.ones(1)} if "sequence_weights" in signature.parameters else {}
    fn(torch.zeros(1, 2, 2), torch.tensor([[IGNORE, 0]]), **params, **extra)


def _with_params(fn, params: dict[str, inspect.Parameter]):
    """A stand-in carrying only `params` as its signature, for registry.check_params."""

    def stand_in(**kwargs):
        return fn

    stand_in.__signature__ = inspect.Signature(list(params.values()))
    return stand_in
