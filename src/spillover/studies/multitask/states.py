"""Model states for CPI-FT: the trainable parameters as a plain dict (name → tensor), for full fine-tuning
(every parameter of the model) and for LoRA (the adapter's lora_A/lora_B weights, names as in the
training model, e.g. `base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight`).

- `initial_state`: θ0 — the base model's parameters (full; shared, never modified) or the freshly
  initialised adapter (LoRA; the init is seeded, so every run of these settings starts from it);
- `trained_state`: θ of a finished run, read back from its saved artifact (model/ or adapter/);
- `train_from`: the training loop started from a given state, with step hooks (exact freezing).

States are read from the saved artifacts, never kept from memory, so a resumed job sees the same values.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from torch import Tensor

from spillover.config import TrainSettings
from spillover.models.adapters import load_adapter
from spillover.models.load import load_model
from spillover.training.checkpoint import CHECKPOINTS
from spillover.training.settings import prepare_for_training
from spillover.training.types import TrainResult

State = dict[str, Tensor]


def _lora_weights(model) -> State:
    return {n: p.detach().clone() for n, p in model.named_parameters() if ".lora_" in n}


def initial_state(ctx, settings: TrainSettings) -> State:
    """θ0 of the trainable parameters under `settings.method`."""
    if settings.method == "full":
        return {n: p.detach() for n, p in ctx.exact_base().named_parameters()}
    model = prepare_for_training(ctx.base_model(), settings)
    try:
        return _lora_weights(model)
    finally:
        model.unload()  # the same base object, without the adapter


def trained_state(ctx, artifact: str | Path, settings: TrainSettings) -> State:
    """The trainable parameters stored in a run's artifact folder."""
    if settings.method == "full":
        model, _ = load_model(str(artifact), ctx.precision)
        return {n: p.detach() for n, p in model.named_parameters()}
    model = load_adapter(ctx.base_model(), artifact)
    try:
        return _lora_weights(model)
    finally:
        model.unload()


def train_from(
    ctx,
    sequences,
    settings: TrainSettings,
    out_dir: Path,
    start: State | None = None,
    hooks=(),
    progress=None,
) -> TrainResult:
    """Train (resumably, in `out_dir`) from `start` (None: from θ0) with step `hooks`; the optimiser and
    checkpoint files are deleted once the run is saved (its artifact is what later stages read)."""
    result = ctx.train_sequences(sequences, settings, out_dir, progress, hooks=hooks, start=start)
    shutil.rmtree(Path(out_dir) / CHECKPOINTS, ignore_errors=True)
    return result
