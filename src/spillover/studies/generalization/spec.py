"""The generalization study's spec (methods.md §2): sources, targets, FT / FTICL methods, the evaluation
shot settings and the training-size ablation; and the checks every input passes before any work."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from spillover.config import Strict
from spillover.data.tasks import TaskSpec
from spillover.errors import SpilloverError
from spillover.studies.specs import SourcesTargetsSpec
from spillover.studies.transfer.spec import check_inputs

Method = Literal["ft", "fticl"]


class FticlSpec(BaseModel):
    """How FTICL training prompts carry demonstrations from the training set itself."""

    model_config = Strict
    shots: int = Field(default=2, ge=1, le=32)
    demos: Literal["per_example", "fixed"] = "per_example"


class GeneralizationAnalysisSpec(BaseModel):
    model_config = Strict
    size: int | None = Field(
        default=None, ge=1, description="training size of the main table (default: largest)"
    )


class GeneralizationStudySpec(SourcesTargetsSpec):
    study: Literal["generalization"] = "generalization"
    methods: list[Method] = Field(default_factory=lambda: ["ft", "fticl"], min_length=1)
    shots: list[int] = Field(default_factory=lambda: [0, 3], min_length=1, description="evaluation settings")
    fticl: FticlSpec = Field(default_factory=FticlSpec)
    sizes: list[int] | None = Field(default=None, min_length=1, description="training-size ablation")
    size_shots: list[int] | None = Field(
        default=None,
        min_length=1,
        description="shot settings the ablation's other sizes are evaluated at (default: all of `shots`)",
    )
    analysis: GeneralizationAnalysisSpec = Field(default_factory=GeneralizationAnalysisSpec)

    @field_validator("shots", "size_shots")
    @classmethod
    def _shots(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return v
        if any(k < 0 or k > 32 for k in v) or len(set(v)) != len(v):
            raise ValueError(f"must be distinct demonstration counts between 0 and 32, got {v}")
        return sorted(v)

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (any(n < 1 for n in v) or len(set(v)) != len(v)):
            raise ValueError(f"must be distinct positive training sizes, got {v}")
        return sorted(v) if v is not None else None

    @model_validator(mode="after")
    def _consistent(self) -> GeneralizationStudySpec:
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods has duplicates: {self.methods}")
        if self.size_shots is not None and not set(self.size_shots) <= set(self.shots):
            raise ValueError(f"size_shots {self.size_shots} must be a subset of shots {self.shots}")
        size = self.analysis.size
        if size is not None and size not in self.training_sizes():
            raise ValueError(
                f"analysis.size = {size} is not one of the training sizes {self.training_sizes()}"
            )
        return self

    def training_sizes(self) -> list[int | None]:
        """The sizes trained at; [train.limit] (possibly None = the whole split) without an ablation."""
        return list(self.sizes) if self.sizes else [self.train.limit]

    def main_size(self) -> int | None:
        return self.analysis.size if self.analysis.size is not None else self.training_sizes()[-1]

    def shots_at(self, size: int | None) -> list[int]:
        """The shot settings a model trained at `size` is evaluated at: all at the main size."""
        if self.size_shots is None or size == self.main_size():
            return self.shots
        return sorted(self.size_shots)


def check_study(spec: GeneralizationStudySpec, tasks: dict[str, TaskSpec], load) -> None:
    """Everything the transfer study checks, plus: every task has a task type (cells are labelled by it),
    and k-shot targets have a train split to draw demonstrations from."""
    check_inputs(spec, tasks, load)
    untyped = [name for name in spec.task_names() if not tasks[name].task_type]
    if untyped:
        raise SpilloverError(
            f"tasks {untyped} have no `task_type`; the generalization study labels cells in-domain / "
            "out-of-domain / cross-task by it (set e.g. `task_type: sentiment` in the task spec)"
        )
    if max(spec.shots) > 0:
        for t in spec.targets:
            if tasks[t].train is None:
                raise SpilloverError(
                    f"target '{t}' has no train split, so k-shot demonstrations (shots: {spec.shots}) cannot "
                    "be drawn for it; give it a `train:` split or use shots: [0]"
                )
    for s in spec.sources:
        n = len(load(s.task, "train", None))
        big = [size for size in spec.training_sizes() if size is not None and size > n]
        if big:
            raise SpilloverError(f"sizes {big} exceed the {n} training rows of source '{s.task}'")
