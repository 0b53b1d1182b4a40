"""Plain-value types of the training loop: TrainParams (in), StepRecord (each step), TrainResult (out), and
StepHook (the seam around the optimiser step where parameter masks plug in later), and StepPlan (the
source of each step's micro-batches)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from spillover.errors import SpilloverError
from spillover.models.load import Precision
from spillover.training.optim import SCHEDULES

# training settings that change how fast or how often, not what is computed: excluded from a training run's
# fingerprint (free to change on resume) and from a study's job ids (changing them re-runs nothing).
# `compile`, like the thread count, may change the last bits of bf16 results; `gradient_checkpointing`
# recomputes the same activations (the same kernels, the RNG state restored) instead of storing them.
NOT_RESULT_AFFECTING = ("log_every", "checkpoint_every", "compile", "gradient_checkpointing")


@dataclass(frozen=True)
class TrainParams:
    """Everything the loop needs besides the model and the data, as plain values.

    `max_steps`, when set, replaces `epochs` (the data cycles, re-bucketed every epoch). `regularizers`
    maps registry names to their params, e.g. {"l2_to_init": {"weight": 0.01}}. `checkpoint_every=0`
    checkpoints only at the end. `max_grad_norm` None or 0 disables clipping (the norm is still logged).
    """

    lr: float = 2e-4
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    warmup_ratio: float = 0.03
    schedule: str = "cosine"
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    max_grad_norm: float | None = 1.0
    seed: int = 0
    objective: str = "cross_entropy"
    objective_params: Mapping[str, Any] = field(default_factory=dict)
    regularizers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    log_every: int = 1
    checkpoint_every: int = 0
    compile: bool | str = "auto"  # torch.compile the forward (models.compile): only True compiles
    gradient_checkpointing: bool = False  # recompute each decoder layer's activations in the backward pass
    precision: Precision = field(default_factory=lambda: Precision(torch.device("cpu"), torch.float32))

    def __post_init__(self) -> None:
        checks = {
            "lr": self.lr > 0 and math.isfinite(self.lr),
            "epochs": self.epochs >= 1,
            "max_steps": self.max_steps is None or self.max_steps >= 1,
            "batch_size": self.batch_size >= 1,
            "grad_accum": self.grad_accum >= 1,
            "warmup_ratio": 0.0 <= self.warmup_ratio <= 1.0,
            "schedule": self.schedule in SCHEDULES,
            "weight_decay": self.weight_decay >= 0,
            "max_grad_norm": self.max_grad_norm is None or self.max_grad_norm >= 0,
            "log_every": self.log_every >= 1,
            "checkpoint_every": self.checkpoint_every >= 0,
            "compile": self.compile in (True, False, "auto"),
            "gradient_checkpointing": not (self.gradient_checkpointing and self.compile is True),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise SpilloverError(f"training parameter {bad[0]}={getattr(self, bad[0])!r} is not allowed")

    def settings(self) -> dict[str, Any]:
        """The result-affecting values, JSON-ready (for the run fingerprint)."""
        out = {k: v for k, v in asdict(self).items() if k not in NOT_RESULT_AFFECTING}
        if self.max_steps is not None:
            del out["epochs"]  # ignored when max_steps is set
        p = self.precision
        out["precision"] = {
            "device": p.device.type,
            "compute": str(p.compute_dtype),
            "param": str(p.param_dtype),
        }
        return out


@dataclass(frozen=True)
class StepRecord:
    """One optimiser step. `to_json()` is both the train_log.jsonl line and the progress callback's event.

    `loss`: token-mean objective loss of this step; `n_tokens`: target (loss) tokens; `n_input_tokens`:
    all non-padding tokens (prompt + target); `tokens_per_s`: n_input_tokens / this step's wall time.
    """

    step: int
    total_steps: int
    epoch: int
    loss: float
    lr: float
    n_tokens: int
    n_input_tokens: int
    tokens_per_s: float
    grad_norm: float
    elapsed_s: float
    stats: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "stats"}
        return out | self.stats


@dataclass(frozen=True)
class TrainResult:
    """`artifact`: out_dir/adapter (LoRA) or out_dir/model (full FT); `n_tokens`: target tokens trained on."""

    final_loss: float
    n_steps: int
    n_tokens: int
    seconds: float
    log_path: Path
    artifact: Path
    fingerprint: str


class StepHook(Protocol):
    """Runs around every optimiser step. A parameter mask zeroes masked gradients in `before` and restores
    frozen values in `after` (so neither momentum nor weight decay can move a frozen element)."""

    def before_optimizer_step(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int
    ) -> None: ...

    def after_optimizer_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None: ...


class StepPlan(Protocol):
    """Which sequences each optimiser step trains on: a pure function of the step, so a resumed run replays
    the same data (`batches.BatchPlan`; `mixture_plan.MixturePlan` for task mixtures)."""

    n_steps: int

    def micro_batches(self, step: int) -> list[list[int]]: ...

    def position(self, step: int) -> tuple[int, int]: ...

    def step_stats(self, step: int) -> dict[str, float]: ...

    def describe(self) -> dict[str, Any]: ...
