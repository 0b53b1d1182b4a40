"""The `train:` section of every config (`TrainSettings`, pydantic, validated once at the edge) and what it
becomes for the library: the loop's plain-value `TrainParams` (`train_params`) and a model ready to train
(`prepare_for_training`).

It lives in training/ so that the dependency runs one way: `config.py` imports (and re-exports) these types,
and nothing under training/ imports `config.py`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_serializer
from torch import nn

from spillover.data.mixture import MixtureSettings
from spillover.errors import SpilloverError, unknown_name_message
from spillover.models.adapters import apply_lora
from spillover.models.load import Precision
from spillover.registry import check_params
from spillover.training.objectives import OBJECTIVES, check_objective_params
from spillover.training.regularizers import REGULARIZERS
from spillover.training.types import TrainParams

Strict = ConfigDict(extra="forbid", allow_inf_nan=False)
MAX_SEED = 2**32 - 1  # numpy's limit; torch and random take the same range


class LoraSpec(BaseModel):
    """peft LoRA settings; names as in peft's LoraConfig."""

    model_config = Strict
    r: int = Field(default=8, ge=1, le=1024)
    alpha: float = Field(default=16, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: str | list[str] = Field(default="all-linear", min_length=1)


class TrainSettings(BaseModel):
    """How to fine-tune: shared by `spillover train` and every study's `train:` section."""

    model_config = Strict
    method: Literal["lora", "full"] = "lora"
    limit: int | None = Field(default=None, ge=1, description="training examples per task (first N)")
    max_len: int = Field(default=256, ge=8, le=32768)
    shots: int = Field(default=0, ge=0, le=32, description="FTICL: demonstrations in every training prompt")
    demos: Literal["per_example", "fixed"] = Field(
        default="per_example", description="FTICL: draw demonstrations per example, or one fixed set"
    )
    lora: LoraSpec = Field(default_factory=LoraSpec)
    learning_rate: float = Field(default=2e-4, gt=0, le=1)
    epochs: int = Field(default=1, ge=1, le=1000)
    max_steps: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=8, ge=1, le=4096)
    grad_accum: int = Field(default=1, ge=1, le=4096)
    warmup_ratio: float = Field(default=0.03, ge=0, le=1)
    schedule: Literal["cosine", "constant"] = "cosine"
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    objective: str = "cross_entropy"
    objective_params: dict[str, Any] = Field(default_factory=dict, validate_default=True)
    regularizers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    checkpoint_every: int = Field(default=50, ge=1)
    log_every: int = Field(default=1, ge=1)
    compile: Literal["auto"] | bool = Field(
        default="auto",
        description="torch.compile the training forward pass: true compiles, auto and false run eagerly "
        "(docs/training.md)",
    )
    gradient_checkpointing: bool = Field(
        default=False,
        description="recompute each decoder layer's activations in the backward pass instead of keeping "
        "them: less memory, more compute, the same results; not with compile: true (docs/training.md)",
    )
    mixture: MixtureSettings | None = Field(
        default=None, description="weighted task mixture (docs/mixture.md)"
    )
    eval_every: int | None = Field(
        default=None,
        ge=1,
        description="probe every eval task (score + validation loss) before training, every N optimiser "
        "steps and at the last; curves in eval_curves.csv and the report (docs/training.md)",
    )
    eval_tasks: list[str] = Field(
        default_factory=list,
        description="the tasks probed every eval_every steps (default: the task(s) the run trains on)",
    )

    @field_validator("eval_tasks")
    @classmethod
    def _distinct_eval_tasks(cls, names: list[str]) -> list[str]:
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"lists {', '.join(repeated)} twice; name each task once")
        return names

    @model_serializer(mode="wrap")
    def _omit_unset_probes(self, handler) -> dict[str, Any]:
        """`eval_every`, `eval_tasks` and `gradient_checkpointing` are left out of a dump while unset, so
        the configs, job parameters and job ids of runs made before they existed stay the same (a study
        re-runs nothing)."""
        data = handler(self)
        if isinstance(data, dict):
            if data.get("gradient_checkpointing") is False:
                del data["gradient_checkpointing"]
            if data.get("eval_every", 0) is None:
                del data["eval_every"]
            if data.get("eval_tasks") == []:
                del data["eval_tasks"]
        return data

    @field_validator("gradient_checkpointing")
    @classmethod
    def _not_compiled(cls, on: bool, info: ValidationInfo) -> bool:
        if on and info.data.get("compile") is True:
            raise ValueError(
                "gradient_checkpointing: true does not combine with compile: true; set one of them"
            )
        return on

    @field_validator("objective")
    @classmethod
    def _known_objective(cls, name: str) -> str:
        if name not in OBJECTIVES:
            raise ValueError(unknown_name_message("objective", name, OBJECTIVES))
        return name

    @field_validator("objective_params")
    @classmethod
    def _objective_params(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """The objective's parameters, checked before any model is loaded."""
        if "objective" in info.data:  # else `objective` itself failed and is reported
            try:  # runs the objective on a 1-token batch: value ranges too (e.g. talr's tau > 0)
                check_objective_params(info.data["objective"], params)
            except SpilloverError as e:  # reported by pydantic with the file and the field path
                raise ValueError(str(e)) from None
        return params

    @field_validator("regularizers")
    @classmethod
    def _known_regularizers(cls, regs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, params in regs.items():
            _check_params("regularizer", name, REGULARIZERS, params)
        return regs


def _check_params(kind: str, name: str, registry, params: dict[str, Any]) -> None:
    """Name known, parameters match the function after its two tensor arguments (see registry.check_params)."""
    try:
        check_params(kind, name, registry.get(name), params, skip=2)
    except SpilloverError as e:  # reported by pydantic with the file and the field path
        raise ValueError(str(e)) from None


def train_params(settings: TrainSettings, precision: Precision) -> TrainParams:
    """The loop's plain-value parameters from a validated `train:` section."""
    return TrainParams(
        lr=settings.learning_rate,
        epochs=settings.epochs,
        max_steps=settings.max_steps,
        batch_size=settings.batch_size,
        grad_accum=settings.grad_accum,
        warmup_ratio=settings.warmup_ratio,
        schedule=settings.schedule,
        weight_decay=settings.weight_decay,
        max_grad_norm=settings.max_grad_norm,
        seed=settings.seed,
        objective=settings.objective,
        objective_params=dict(settings.objective_params),
        regularizers={k: dict(v) for k, v in settings.regularizers.items()},
        log_every=settings.log_every,
        checkpoint_every=settings.checkpoint_every,
        compile=settings.compile,
        gradient_checkpointing=settings.gradient_checkpointing,
        precision=precision,
    )


def prepare_for_training(model: nn.Module, settings: TrainSettings) -> nn.Module:
    """LoRA: wrap in a fresh adapter (base frozen); full: every parameter trainable."""
    if settings.method == "lora":
        lora = settings.lora
        return apply_lora(model, lora.r, lora.alpha, lora.dropout, lora.target_modules, seed=settings.seed)
    for p in model.parameters():
        p.requires_grad_(True)
    return model
