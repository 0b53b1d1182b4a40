"""User-facing YAML configs (pydantic, extra="forbid"), validated once at the CLI edge.

`key=value` overrides on the command line set (dotted) keys before validation, with the value parsed
as YAML (`learning_rate=1e-4`, `lora.r=16`, `tasks=[sst2,snli]`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from spillover.data.mixture import MixtureSettings
from spillover.errors import SpilloverError
from spillover.yamlio import load_yaml, validate

Strict = ConfigDict(extra="forbid", allow_inf_nan=False)


class LoraSpec(BaseModel):
    """peft LoRA settings; names as in peft's LoraConfig."""

    model_config = Strict
    r: int = Field(default=8, ge=1, le=1024)
    alpha: float = Field(default=16, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"


class TrainSettings(BaseModel):
    """How to fine-tune: shared by `spillover train` and every study's `train:` section."""

    model_config = Strict
    method: Literal["lora", "full"] = "lora"
    limit: int | None = Field(default=None, ge=1, description="training examples per task (first N)")
    max_len: int = Field(default=256, ge=8, le=32768)
    shots: int = Field(default=0, ge=0, le=32, description="FTICL: demonstrations in every training prompt")
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
    objective_params: dict[str, Any] = Field(default_factory=dict)
    regularizers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    seed: int = 0
    checkpoint_every: int = Field(default=50, ge=1)
    log_every: int = Field(default=1, ge=1)
    mixture: MixtureSettings | None = Field(
        default=None, description="weighted task mixture (docs/mixture.md)"
    )

    @model_validator(mode="after")
    def _names_exist(self) -> TrainSettings:
        from spillover.training.objectives import OBJECTIVES
        from spillover.training.regularizers import REGULARIZERS

        OBJECTIVES.get(self.objective)
        for name in self.regularizers:
            REGULARIZERS.get(name)
        return self


class TrainSpec(TrainSettings):
    """`spillover train CONFIG.yaml`: fine-tune one model on one or more tasks, optionally evaluate."""

    model: str = "embedded"
    tasks: list[str] = Field(min_length=1)
    tasks_file: str | None = None
    output_dir: str
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    device: str = "auto"
    eval_tasks: list[str] = Field(default_factory=list, description="evaluate these after training")
    eval_limit: int | None = Field(default=None, ge=1)
    eval_shots: int = Field(default=0, ge=0, le=32)
    eval_base: bool = Field(default=True, description="also evaluate the untuned model, for comparison")
    report_to: list[Literal["tensorboard", "mlflow"]] = Field(default_factory=list)


def apply_overrides(data: dict[str, Any], overrides: list[str], origin: str) -> dict[str, Any]:
    """Set `a.b=value` pairs into a nested dict (values parsed as YAML)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SpilloverError(f"override '{item}' is not key=value (e.g. learning_rate=1e-4)")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            raise SpilloverError(f"override '{item}': the value is not valid YAML") from None
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SpilloverError(f"override '{item}': '{part}' in {origin} is not a mapping")
            node = child
        node[parts[-1]] = value
    return data


def load_spec(model: type[BaseModel], path: str | Path, overrides: list[str] = ()) -> BaseModel:
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise SpilloverError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    data = apply_overrides(data, list(overrides), str(path))
    return validate(model, data, str(path))


def dump_spec(spec: BaseModel) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)


class EvalSettings(BaseModel):
    """How every evaluation of a study runs."""

    model_config = Strict
    limit: int | None = Field(default=None, ge=1, description="first N test examples per target")
    shots: int = Field(default=0, ge=0, le=32)
    batch_size: int = Field(default=16, ge=1, le=4096)
    seed: int = 0


class StudySpec(BaseModel):
    """Fields every study kind shares; each kind (studies/*.py) extends it with its own."""

    model_config = Strict
    study: str
    model: str = "embedded"
    tasks_file: str | None = None
    output_dir: str
    seed: int = 0
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    device: str = "auto"
    train: TrainSettings = Field(default_factory=TrainSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)
    report_to: list[Literal["tensorboard", "mlflow"]] = Field(default_factory=list)
