"""User-facing YAML configs (pydantic, extra="forbid"), validated once at the CLI edge.

`key=value` overrides on the command line set (dotted) keys before validation, with the value parsed
as YAML (`learning_rate=1e-4`, `lora.r=16`, `tasks=[sst2,snli]`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from spillover.data.mixture import MixtureSettings
from spillover.errors import SpilloverError, unknown_name_message
from spillover.yamlio import load_yaml, validate

Strict = ConfigDict(extra="forbid", allow_inf_nan=False)
MAX_SEED = 2**32 - 1  # numpy's limit; torch and random take the same range
# training settings that change how fast or how often, not what is computed: excluded from a training run's
# fingerprint (free to change on resume) and from a study's job ids (changing them re-runs nothing).
# `compile`, like the thread count, may change the last bits of bf16 results.
NOT_RESULT_AFFECTING = ("log_every", "checkpoint_every", "compile")
DEVICE = r"^(auto|cpu|mps|cuda(:\d+)?)$"


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
        description="torch.compile the decoder layers for training: auto (CPU bf16, once the process has "
        "trained >= 4 TFLOP), true or false (docs/training.md)",
    )
    mixture: MixtureSettings | None = Field(
        default=None, description="weighted task mixture (docs/mixture.md)"
    )

    def job_params(self) -> dict[str, Any]:
        """What a study's training job id covers: the settings, JSON-ready, with the NOT_RESULT_AFFECTING
        ones at their defaults (not dropped: study folders made before keep their job ids). The job then
        runs with the study's current values of those (`for_job`)."""
        defaults = {name: type(self).model_fields[name].default for name in NOT_RESULT_AFFECTING}
        return self.model_copy(update=defaults).model_dump(mode="json")

    @classmethod
    def for_job(cls, params: dict[str, Any], study: TrainSettings) -> TrainSettings:
        """A training job's settings: its `params` (see `job_params`) with the NOT_RESULT_AFFECTING values
        of the study's `train:` section as it is now."""
        return cls.model_validate(params).model_copy(
            update={n: getattr(study, n) for n in NOT_RESULT_AFFECTING}
        )

    @field_validator("objective")
    @classmethod
    def _known_objective(cls, name: str) -> str:
        from spillover.training.objectives import OBJECTIVES

        if name not in OBJECTIVES:
            raise ValueError(unknown_name_message("objective", name, OBJECTIVES))
        return name

    @field_validator("objective_params")
    @classmethod
    def _objective_params(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """The objective's parameters, checked before any model is loaded."""
        from spillover.training.objectives import check_objective_params

        if "objective" in info.data:  # else `objective` itself failed and is reported
            try:  # runs the objective on a 1-token batch: value ranges too (e.g. talr's tau > 0)
                check_objective_params(info.data["objective"], params)
            except SpilloverError as e:  # reported by pydantic with the file and the field path
                raise ValueError(str(e)) from None
        return params

    @field_validator("regularizers")
    @classmethod
    def _known_regularizers(cls, regs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from spillover.training.regularizers import REGULARIZERS

        for name, params in regs.items():
            _check_params("regularizer", name, REGULARIZERS, params)
        return regs


def _check_params(kind: str, name: str, registry, params: dict[str, Any]) -> None:
    """Name known, parameters match the function after its two tensor arguments (see registry.check_params)."""
    from spillover.registry import check_params

    try:
        check_params(kind, name, registry.get(name), params, skip=2)
    except SpilloverError as e:  # reported by pydantic with the file and the field path
        raise ValueError(str(e)) from None


class TrainSpec(TrainSettings):
    """`spillover train CONFIG.yaml`: fine-tune one model on one or more tasks, optionally evaluate."""

    model: str = "embedded"
    tasks: list[str] = Field(min_length=1)
    tasks_file: str | None = None
    output_dir: str = Field(min_length=1)
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    device: str = Field(default="auto", pattern=DEVICE)
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
    batch_size: int = Field(
        default=16,
        ge=1,
        le=4096,
        description="generation prompts per batch; scoring batches short rows by a token budget",
    )
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    compile: Literal["auto"] | bool = Field(
        default="auto",
        description="torch.compile the decoder layers for log-likelihood scoring: auto (CPU bf16, once the "
        "process has scored >= 15 TFLOP), true or false (docs/evaluation.md)",
    )

    def job_params(self) -> dict[str, Any]:
        """What an evaluation job's id covers: every field but `compile`, a speed setting (compiled and
        eager scores agree within bf16 rounding), so switching it re-runs nothing."""
        return self.model_dump(mode="json", exclude={"compile"})


class StudySpec(BaseModel):
    """Fields every study kind shares; each kind (studies/*.py) extends it with its own."""

    model_config = Strict
    study: str
    model: str = "embedded"
    tasks_file: str | None = None
    output_dir: str = Field(min_length=1)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    device: str = Field(default="auto", pattern=DEVICE)
    train: TrainSettings = Field(default_factory=TrainSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)
    report_to: list[Literal["tensorboard", "mlflow"]] = Field(default_factory=list)
