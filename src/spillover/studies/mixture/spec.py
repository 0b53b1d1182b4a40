"""The mixture study's spec (methods.md §5): the tasks, the mixtures to train them under, and when and how
every task is probed during training; and the checks every input passes before any work."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from spillover.analysis.behaviour import DEFAULT_HEDGES
from spillover.config import EvalSettings, Strict, StudySpec
from spillover.data.mixture import MixtureSettings
from spillover.data.tasks import TaskSpec
from spillover.errors import SpilloverError
from spillover.evaluation.checkpoint_eval import ProbeSettings
from spillover.studies.contract import BASE


class MixtureEntry(MixtureSettings):
    """One mixture of the study: a `mixture:` section with a name."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")

    def settings(self) -> MixtureSettings:
        """The `mixture:` section it names (what its training job trains on)."""
        return MixtureSettings.model_validate(self.model_dump(exclude={"name"}, exclude_none=True))


class CheckpointSettings(BaseModel):
    """When and how each task is probed during training (the held-out slice is `eval.limit` test rows)."""

    model_config = Strict
    every: int = Field(default=10, ge=1, description="probe every N optimiser steps (and at the last)")
    free_tokens: int = Field(default=8, ge=0, le=256, description="free generation on classification prompts")
    max_new_tokens: int | None = Field(
        default=32, ge=1, description="cap on generation tasks' max_new_tokens"
    )
    hedges: list[str] = Field(
        default_factory=lambda: list(DEFAULT_HEDGES), description="hedge/refusal phrases"
    )

    def probe_settings(self, eval: EvalSettings) -> ProbeSettings:
        """The library's plain-value probe settings (`evaluation.checkpoint_eval`) for these checkpoints,
        on the held-out slice and batches of `eval`."""
        return ProbeSettings(
            eval.limit,
            eval.batch_size,
            self.free_tokens,
            tuple(self.hedges),
            self.max_new_tokens,
            compile=eval.compile,
        )


class RecommendSettings(BaseModel):
    """Ratio recommendation from the finished mixtures (`analysis.mixture_regression.recommend`)."""

    model_config = Strict
    epsilon: float = Field(
        default=0.02, ge=0, description="no task predicted more than this below the base model's score"
    )
    grid: float = Field(default=0.05, gt=0, le=0.5, description="step of the ratio grid searched")

    @model_validator(mode="after")
    def _divides_one(self) -> RecommendSettings:
        n = round(1 / self.grid)
        if abs(n * self.grid - 1) > 1e-9:
            raise ValueError(f"grid {self.grid} does not divide 1 into equal steps; use e.g. 0.05, 0.1, 0.25")
        return self

    def grid_size(self, n_tasks: int) -> int:
        """Ratio vectors the grid holds over `n_tasks` tasks."""
        return math.comb(round(1 / self.grid) + n_tasks - 1, n_tasks - 1)


MAX_GRID = 200_000


class MixtureStudySpec(StudySpec):
    study: Literal["mixture"] = "mixture"
    tasks: list[str] = Field(min_length=2)
    mixtures: list[MixtureEntry] = Field(min_length=1)
    checkpoints: CheckpointSettings = Field(default_factory=CheckpointSettings)
    recommend: RecommendSettings = Field(default_factory=RecommendSettings)

    @model_validator(mode="after")
    def _consistent(self) -> MixtureStudySpec:
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks has duplicates: {self.tasks}")
        names = [m.name for m in self.mixtures]
        if len(set(names)) != len(names) or BASE in names:
            raise ValueError(f"mixture names must be unique and not '{BASE}': {names}")
        if self.train.mixture is not None:
            raise ValueError("a mixture study takes its mixtures from `mixtures:`; remove `train.mixture`")
        if self.eval.shots:
            raise ValueError("the mixture study probes zero-shot; set eval.shots: 0")
        size = self.recommend.grid_size(len(self.tasks))
        if size > MAX_GRID:
            raise ValueError(
                f"recommend.grid {self.recommend.grid} over {len(self.tasks)} tasks is {size} ratio vectors "
                f"(at most {MAX_GRID}); use a coarser grid"
            )
        return self

    def task_names(self) -> list[str]:
        return list(self.tasks)


def check_inputs(spec: MixtureStudySpec, tasks: dict[str, TaskSpec], load) -> None:
    """Every task has a train and a test split; every mixture's ratios name exactly the study's tasks."""
    sizes = []
    for name in spec.tasks:
        if tasks[name].train is None:
            raise SpilloverError(f"task '{name}' has no train split (set `train:` in its task spec)")
        sizes.append(len(load(name, "train", spec.train.limit)))
        load(name, "test", 1)
    for i, m in enumerate(spec.mixtures):
        m.to_schedule(spec.tasks, sizes, where=f"mixtures[{i}] ({m.name})")
