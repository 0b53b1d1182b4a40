"""FLOW's per-sequence weights (methods.md §4.4): computed once with the base model, cached in the run folder.

w_s = exp(−L_s / τ), L_s the base model's mean token loss on training sequence s, τ the given temperature
or (default) the median of L_s over the dataset; then normalised over the dataset to mean 1 (Σ_s w_s = S),
so the loss keeps the scale of plain cross-entropy and the learning rate means the same thing. Easy
sequences (low base loss) get weight up to S / Σ w, hard ones little.

`prepare_sequence_weights` is what the loop calls: for an objective that declares a `sequence_weights`
parameter it returns the (S,) weights, read from `out_dir/sequence_weights.json` when that file was made
for the same settings and data (so a resumed run uses identical weights), else computed with the model as
passed to `train` (before any resume: the base model, or a fresh LoRA adapter, whose B = 0 makes it equal
to the base) and written atomically.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from spillover.atomic import atomic_write_text
from spillover.data.collate import Sequence_
from spillover.models.load import Precision
from spillover.training.sequence_nll import sequence_nll

log = logging.getLogger(__name__)
WEIGHTS_FILE = "sequence_weights.json"


def flow_weights(base_losses: Tensor, tau: float | None = None) -> tuple[Tensor, float]:
    """(S,) mean-1 weights exp(−L_s/τ)·S/Σ exp(−L/τ), and τ (given, or the median of `base_losses` (S,)).

    Computed as a softmax of −L/τ (scaled by S), so large losses or a small τ cannot overflow.
    """
    losses = base_losses.double()
    if tau is None:
        tau = float(torch.quantile(losses, 0.5))
    tau = max(tau, 1e-6)
    w = torch.softmax(-losses / tau, dim=0) * losses.numel()
    return w.float(), tau


def wants_sequence_weights(objective: Callable) -> bool:
    return "sequence_weights" in inspect.signature(objective).parameters


def prepare_sequence_weights(
    objective: Callable,
    params: Mapping[str, Any],
    model: nn.Module,
    sequences: Sequence[Sequence_],
    pad_id: int,
    precision: Precision,
    out_dir: Path,
    key: str,
    batch_size: int = 8,
) -> Tensor | None:
    """The (S,) weights for `objective`, or None when it takes none. `key` identifies settings + data."""
    if not wants_sequence_weights(objective):
        return None
    path = out_dir / WEIGHTS_FILE
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return torch.tensor(cached["weights"], dtype=torch.float32)
        log.warning("%s was made for other settings or data; recomputing", path)
    nll = sequence_nll(model, sequences, pad_id, precision, batch_size)
    losses = torch.stack([n.mean() if n.numel() else torch.tensor(float("nan")) for n in nll])
    losses = torch.nan_to_num(losses, nan=float(losses.nanmean()))  # a sequence without targets: average
    weights, tau = flow_weights(losses, params.get("tau"))
    payload = {"key": key, "tau": tau, "base_loss": losses.tolist(), "weights": weights.tolist()}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload))
    log.info(
        "FLOW weights for %d sequences (tau %.4g): min %.3g, max %.3g",
        len(weights),
        tau,
        float(weights.min()),
        float(weights.max()),
    )
    return weights
