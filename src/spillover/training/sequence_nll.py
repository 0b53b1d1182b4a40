"""Per-token negative log-likelihood of ready training sequences under a model, without gradients.

Used for FLOW's base-model sequence losses (`training.flow`) and for the code-length and token-probability
analyses (`analysis.tokens`). The sequences are scored exactly as training sees them: right-padded with
`collate.pad_batch`, loss on target (continuation) tokens only, causal shift and fp32 NLL from
`objectives.target_nll`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from spillover.data.collate import Sequence_, pad_batch
from spillover.models.load import Precision
from spillover.training.objectives import target_nll


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
    device = precision.device if precision is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), _autocast(precision):
            for start in range(0, len(sequences), batch_size):
                chunk = sequences[start : start + batch_size]
                batch = pad_batch(chunk, pad_id)
                logits = model(
                    input_ids=batch["input_ids"].to(device),
                    attention_mask=batch["attention_mask"].to(device),
                    use_cache=False,
                ).logits
                t = target_nll(logits, batch["labels"].to(device))
                nll, rows = t.nll.float().cpu(), t.rows.cpu()
                out += [nll[rows == i] for i in range(len(chunk))]
    finally:
        model.train(was_training)
    return out


def _autocast(precision: Precision | None):
    if precision is None or not precision.autocast:
        return contextlib.nullcontext()
    return torch.autocast(precision.device.type, dtype=precision.compute_dtype)
