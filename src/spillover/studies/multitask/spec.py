"""The multitask study's spec (methods.md §3): the tasks, CPI-FT's settings and its sweep, the baselines,
the sequential pairs; and the checks every input passes before any work."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from spillover.config import Strict, StudySpec
from spillover.data.tasks import TaskSpec
from spillover.errors import SpilloverError

BASELINES = ("joint", "multistage_random", "multistage_heuristic")
SEQUENTIAL_METHODS = ("sft", "cpi")
LORA_REFUSED = (
    "train.method = 'lora' (also the default when `method` is not set) is not allowed in a multitask study: "
    "CPI-FT's cores, transplant, SLERP and freezing act on the weights W; applied to a LoRA adapter's A "
    "and B separately they are not the method (one task's B next to another's A creates cross-terms in "
    "B·A); set `train: {method: full}`"
)


class SweepSettings(BaseModel):
    """Core fractions and thresholds for the sweep (computed from the probes, no extra training)."""

    model_config = Strict
    p: list[float] = Field(default=[0.1, 0.5, 1.0, 5.0], min_length=1, description="core fractions in %")
    tau: list[float] = Field(default=[0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0], min_length=1)

    @field_validator("p")
    @classmethod
    def _percent(cls, v: list[float]) -> list[float]:
        bad = [x for x in v if not 0.0 < x <= 100.0]
        if bad:
            raise ValueError(f"core fraction p={bad[0]} is not allowed; use percentages in (0, 100]")
        return sorted(set(v))

    @field_validator("tau")
    @classmethod
    def _unit(cls, v: list[float]) -> list[float]:
        bad = [x for x in v if not 0.0 <= x <= 1.0]
        if bad:
            raise ValueError(f"grouping threshold tau={bad[0]} is not allowed; use numbers in [0, 1]")
        return sorted(set(v))


class CpiMethodSettings(BaseModel):
    """What the CPI-FT training run computes with (methods.md §3; reference p = 1%, τ = 0.1)."""

    model_config = Strict
    p: float = Field(default=1.0, gt=0, le=100, description="core region: top-p% update magnitudes")
    scope: Literal["global", "per_tensor"] = "global"
    tau: float = Field(default=0.1, ge=0, le=1, description="link tasks whose cores' Jaccard ≥ tau")
    order: Literal["heuristic", "random"] = "heuristic"
    fusion_base: Literal["last_probe", "base"] = Field(
        default="last_probe", description="start of fusion: the last stage's probe model, or θ0"
    )
    omega: float = Field(default=0.5, ge=0, le=1, description="SLERP factor for non-core positions")
    epsilon: float = Field(default=1e-4, ge=0, description="angle (radians) below which SLERP → LERP")
    calibration: int = Field(default=32, ge=1, description="examples per task in each stage's sample")


class CpiSettings(CpiMethodSettings):
    """The `cpi:` section: CPI-FT's settings and the p × τ sweep of the core regions."""

    sweep: SweepSettings = Field(default_factory=SweepSettings)


class MultitaskStudySpec(StudySpec):
    study: Literal["multitask"] = "multitask"
    tasks: list[str] = Field(min_length=2)
    cpi: CpiSettings = Field(default_factory=CpiSettings)
    baselines: list[Literal["joint", "multistage_random", "multistage_heuristic"]] = Field(
        default_factory=lambda: list(BASELINES)
    )
    sequential: list[list[str]] = Field(
        default_factory=list, description="pairs [A, B]: train A then B and B then A, per method"
    )

    @model_validator(mode="after")
    def _consistent(self) -> MultitaskStudySpec:
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks has duplicates: {self.tasks}")
        if len(set(self.baselines)) != len(self.baselines):
            raise ValueError(f"baselines has duplicates: {self.baselines}")
        if self.train.mixture is not None:
            raise ValueError("a multitask study mixes its tasks itself; remove `train.mixture`")
        if self.train.method != "full":
            raise ValueError(LORA_REFUSED)
        seen = set()
        for i, pair in enumerate(self.sequential):
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ValueError(f"sequential[{i}] = {pair}: give two different tasks [A, B]")
            unknown = [t for t in pair if t not in self.tasks]
            if unknown:
                raise ValueError(
                    f"sequential[{i}] = {pair}: {unknown} not among the study's tasks {self.tasks}"
                )
            if frozenset(pair) in seen:
                raise ValueError(
                    f"sequential[{i}] = {pair}: this pair is already listed (both orders always run)"
                )
            seen.add(frozenset(pair))
        return self

    def task_names(self) -> list[str]:
        return list(self.tasks)

    def methods(self) -> list[str]:
        return [*self.baselines, "cpi"]

    def probe_targets(self, task: str) -> list[str]:
        """A probe is scored on its own task (the normalisation reference) and, when it is stage 1 of a
        sequential run, on the other task of the pair (B after A)."""
        partners = {b for a, b in self.orders() if a == task}
        return [t for t in self.tasks if t == task or t in partners]

    def orders(self) -> list[tuple[str, str]]:
        """Every sequential run: (A, B) and (B, A) for each listed pair."""
        return [o for a, b in self.sequential for o in ((a, b), (b, a))]


def check_inputs(spec: MultitaskStudySpec, tasks: dict[str, TaskSpec], load) -> None:
    """Every task has a train split and a test split, and every row the jobs will read is valid."""
    for name in spec.tasks:
        if tasks[name].train is None:
            raise SpilloverError(f"task '{name}' has no train split (set `train:` in its task spec)")
        load(name, "train", spec.train.limit)
        load(name, "test", spec.eval.limit)
        if spec.eval.shots:
            load(name, "train", None)


def seq_label(method: str, first: str, second: str) -> str:
    """The model label of a sequential run (A then B) in the score tables."""
    return f"seq:{method}:{first}>{second}"


def single_label(task: str) -> str:
    """The model label of a task's probe (its single-task fine-tune) in the score tables."""
    return f"single:{task}"
