"""Per-token negative log-likelihood of ready training sequences under a model, without gradients.

Used for FLOW's base-model sequence losses (`training.flow`) and for the code-length and token-probability
analyses (`analysis.tokens`). The sequences are scored exactly as training sees them: right-padded with
`collate.pad_batch`, loss on target (continuation) tokens only, causal shift and fp32 NLL from
`objectives.target_nll`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from spillover.data.collate import Sequence_, pad_batch
from spillover.models.load import Precision
from spillover.training.objectives import TargetTokens, target_nll


def sequence_nll(
    model: nn.Module,
    sequences: Sequence[Sequence_],
    pad_id: int,
    precision: Precision | None = None,
    batch_size: int = 8,
) -> list[Tensor]:
    """One (n_target_i,) fp32 CPU tensor of per-token NLL (nats) per sequence, in the input order.

    Batches follow the input order (no length sorting); eval mode and autocast (when `precision` asks for
    it) for the duration, the model's mode is restored. A sequence without target tokens gets an empty tensor.
    """
    out: list[Tensor] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for chunk, t in target_batches(model, sequences, pad_id, precision, batch_size):
                nll, rows = t.nll.float().cpu(), t.rows.cpu()
                out += [nll[rows == i] for i in range(len(chunk))]
    finally:
        model.train(was_training)
    return out


def target_batches(
    model: nn.Module,
    sequences: Sequence[Sequence_],
    pad_id: int,
    precision: Precision | None = None,
    batch_size: int = 8,
) -> Iterator[tuple[Sequence[Sequence_], TargetTokens]]:
    """(the batch's sequences, their target tokens' NLL) for batches of `sequences` in input order, each
    right-padded and run through `model` (autocast when `precision` asks for it). Gradients flow unless
    the caller turns them off; the model's mode is the caller's."""
    device = precision.device if precision is not None else next(model.parameters()).device
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start : start + batch_size]
        batch = pad_batch(chunk, pad_id)
        with _autocast(precision):
            logits = model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                use_cache=False,
            ).logits
        yield chunk, target_nll(logits, batch["labels"].to(device))


def _autocast(precision: Precision | None):
    if precision is None or not precision.autocast:
        return contextlib.nullcontext()
    return torch.autocast(precision.device.type, dtype=precision.compute_dtype)
