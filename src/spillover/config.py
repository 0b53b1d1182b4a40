"""User-facing YAML configs (pydantic, extra="forbid"), validated once at the CLI edge.

`key=value` overrides on the command line set (dotted) keys before validation, with the value parsed
as YAML (`learning_rate=1e-4`, `lora.r=16`, `tasks=[sst2,snli]`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationInfo, field_validator

from spillover.errors import SpilloverError

# the `train:` section and its pieces live with the training code (training/settings.py); re-exported here
from spillover.training.settings import MAX_SEED as MAX_SEED
from spillover.training.settings import LoraSpec as LoraSpec
from spillover.training.settings import Strict as Strict
from spillover.training.settings import TrainSettings as TrainSettings
from spillover.training.types import NOT_RESULT_AFFECTING as NOT_RESULT_AFFECTING
from spillover.yamlio import load_yaml, validate

DEVICE = r"^(auto|cpu|mps|cuda(:\d+)?)$"


class TrainSpec(TrainSettings):
    """`spillover train CONFIG.yaml`: fine-tune one model on one or more tasks, optionally evaluate."""

    model: str = "embedded"
    tasks: list[str] = Field(min_length=1)
    tasks_file: str | None = None
    output_dir: str = Field(min_length=1)
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    device: str = Field(default="auto", pattern=DEVICE)
    eval_tasks: list[str] = Field(
        default_factory=list,
        description="evaluate these after training; with eval_every also probe them during training "
        "(default then: the training tasks)",
    )
    eval_limit: int | None = Field(default=None, ge=1)
    eval_shots: int = Field(default=0, ge=0, le=32)
    eval_base: bool = Field(default=True, description="also evaluate the untuned model, for comparison")
    report_to: list[Literal["tensorboard", "mlflow"]] = Field(default_factory=list)


def resolve_named(field: str, names: list[str], tasks_file: str | Path | None = None) -> list:
    """`data.tasks.resolve_tasks` whose unknown-name message names the config field, e.g.
    "eval_tasks: unknown task 'sst3'; did you mean 'sst2'? available: …"."""
    from spillover.data.tasks import resolve_tasks

    try:
        return resolve_tasks(names, tasks_file)
    except SpilloverError as e:
        raise SpilloverError(f"{field}: {e}") from None


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
        description="torch.compile the forward passes of log-likelihood scoring: true compiles, auto and "
        "false score eagerly (docs/evaluation.md)",
    )


class StudyTrainSettings(TrainSettings):
    """A study's `train:` section: `TrainSettings` plus `seeds`, the training-seed replicates."""

    seeds: list[int] | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="train every model once per seed (replicates; default: [seed]); differences are "
        "averaged over the seeds with a seeds-then-rows bootstrap (docs/studies.md)",
    )

    @field_validator("eval_tasks")
    @classmethod
    def _probes_need_eval_every(cls, names: list[str], info: ValidationInfo) -> list[str]:
        if names and info.data.get("eval_every", 0) is None:  # 0: eval_every itself failed and is reported
            raise ValueError(
                "probes tasks during training and needs eval_every (e.g. eval_every: 10); the study's "
                "own evaluations are set by the study"
            )
        return names

    @field_validator("seeds")
    @classmethod
    def _valid_seeds(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is None:
            return None
        bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
        if bad:
            raise ValueError(f"seeds {bad} are outside 0..{MAX_SEED}")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds has duplicates: {seeds}; each replicate needs its own seed")
        return seeds

    @property
    def replicate_seeds(self) -> list[int]:
        """The seeds each trained model is repeated with: `seeds`, or just `seed`."""
        return list(self.seeds) if self.seeds else [self.seed]

    def for_seed(self, seed: int) -> TrainSettings:
        """This section for one replicate: plain `TrainSettings` with `seed` set. `seeds` is a study-level
        setting, never a job's parameter (each job trains one seed), so job ids do not depend on it."""
        return TrainSettings.model_validate(self.model_dump(exclude={"seeds"}) | {"seed": seed})


class StudySpec(BaseModel):
    """Fields every study kind shares; each kind (studies/*.py) extends it with its own."""

    model_config = Strict
    study: str
    model: str = "embedded"
    tasks_file: str | None = None
    lm_eval_include: list[str] = Field(
        default_factory=list,
        description="folders of lm-eval task YAMLs searched for lm_eval:TASK targets before lm-eval's own "
        "tasks (relative to the study YAML's folder)",
    )
    output_dir: str = Field(min_length=1)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    device: str = Field(default="auto", pattern=DEVICE)
    train: StudyTrainSettings = Field(default_factory=StudyTrainSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)
    report_to: list[Literal["tensorboard", "mlflow"]] = Field(default_factory=list)
    keep_models: bool = Field(
        default=False,
        description="keep every full fine-tune's model folder; by default one is deleted once every job "
        "that reads it is done (LoRA adapters are always kept; docs/studies.md)",
    )

    def lm_eval_targets(self) -> list[str]:
        """The names that may be lm-eval tasks (`lm_eval:TASK`): those of the kind's fields it only evaluates
        on, never trains on (none by default; the transfer study's `targets`)."""
        return []
