"""The study's models for CPI-FT, from the study's shared resources (`StudyContext`): θ0 and trained states
(`training.cpi.State`: the trainable parameters as name → tensor), and the model a training run trains.

- `initial_state`: θ0 — the base model's parameters (full; shared, never modified) or the freshly
  initialised adapter (LoRA; the init is seeded, so every run of these settings starts from it);
- `trained_state`: θ of a finished run, read back from its saved artifact (model/ — a bf16 delta against θ0,
  read lazily — or adapter/);
- `train_run`: `training.cpi.train_from` on a fresh full copy, or on a fresh adapter over the shared base.

States are read from the saved artifacts, never kept from memory, so a resumed job sees the same values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from spillover.models.adapters import load_adapter
from spillover.models.deltas import DeltaState, is_delta_dir
from spillover.models.load import load_model
from spillover.studies.context import StudyContext
from spillover.training.cpi import State, lora_state, model_state, train_from
from spillover.training.settings import TrainSettings, prepare_for_training, train_params
from spillover.training.types import StepHook, TrainResult


def initial_state(ctx: StudyContext, settings: TrainSettings) -> State:
    """θ0 of the trainable parameters under `settings.method`."""
    if settings.method == "full":
        return model_state(ctx.base_model())
    model = prepare_for_training(ctx.base_model(), settings)
    try:
        return lora_state(model)
    finally:
        model.unload()  # the same base object, without the adapter


def trained_state(ctx: StudyContext, artifact: str | Path, settings: TrainSettings) -> State:
    """The trainable parameters stored in a run's artifact folder."""
    if settings.method == "full":  # θ0 + the stored Δ, read tensor by tensor (models.deltas)
        return (
            DeltaState(artifact, ctx.base_state())
            if is_delta_dir(artifact)
            else model_state(ctx.full_model(artifact))
        )
    model = load_adapter(ctx.base_model(), artifact)
    try:
        return lora_state(model)
    finally:
        model.unload()


def train_run(
    ctx: StudyContext,
    sequences,
    settings: TrainSettings,
    out_dir: Path,
    start: Mapping[str, Tensor] | None = None,
    hooks: Sequence[StepHook] = (),
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train from `start` (None: θ0) with step `hooks`: full fine-tuning on a fresh copy of the model,
    LoRA on a fresh adapter over the shared base (unloaded afterwards)."""
    params = train_params(settings, ctx.precision)
    if settings.method == "full":
        model, _ = load_model(ctx.spec.model, ctx.precision)
        model = prepare_for_training(model, settings)
        result = train_from(model, ctx.tokenizer, sequences, params, out_dir, start, hooks, progress)
        del model  # one trained copy in memory at a time
        ctx.compact(result.artifact)
        return result
    model = prepare_for_training(ctx.base_model(), settings)
    try:
        return train_from(model, ctx.tokenizer, sequences, params, out_dir, start, hooks, progress)
    finally:
        model.unload()  # the same base object, without the adapter
