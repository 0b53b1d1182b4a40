"""The study's models for CPI-FT, from the study's shared resources (`StudyContext`): θ0 and trained states
(`training.cpi.State`: the trainable parameters as name → tensor), and the model a training run trains.

- `initial_state`: θ0 — the base model's parameters (full; shared, never modified, looked up at each
  access: `StudyContext.base_state`) or the freshly initialised adapter (LoRA; the init is seeded, so
  every run of these settings starts from it);
- `trained_state`: θ of a finished run, read back from its saved artifact (model/ — a bf16 delta against θ0,
  read lazily — or adapter/);
- `train_run`: the context's `train_sequences` from a start state with step hooks, checkpoints dropped after.

States are read from the saved artifacts, never kept from memory, so a resumed job sees the same values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from spillover.models.adapters import load_adapter
from spillover.models.deltas import DeltaState, is_delta_dir
from spillover.studies.context import StudyContext
from spillover.training.cpi import State, drop_checkpoints, lora_state, model_state
from spillover.training.settings import TrainSettings, prepare_for_training
from spillover.training.types import StepHook, TrainResult


def initial_state(ctx: StudyContext, settings: TrainSettings) -> Mapping[str, Tensor]:
    """θ0 of the trainable parameters under `settings.method`."""
    if settings.method == "full":
        return ctx.base_state()
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
    train_tasks: Sequence[str] = (),
    log: Callable[[dict[str, float], int], None] | None = None,
) -> TrainResult:
    """`StudyContext.train_sequences` from `start` (None: θ0) with step `hooks` (a fresh full copy, stored as
    its delta, or a fresh adapter over the shared base); once the run is saved its optimiser checkpoints are
    deleted, since later stages read the saved weights. `train_tasks`, `log`: for the evaluation curves
    (`StudyContext.train_sequences`)."""
    result = ctx.train_sequences(
        sequences, settings, out_dir, progress, hooks=hooks, start=start, train_tasks=train_tasks, log=log
    )
    drop_checkpoints(out_dir)
    return result
