"""Spec pieces several study kinds share: training sources (a task, optionally transformed by controls),
sources × targets studies, and dataset-statistics settings."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from spillover.config import Strict, StudySpec
from spillover.data.transforms import check_transforms, describe
from spillover.errors import SpilloverError


class SourceSpec(BaseModel):
    """A training source: a task, optionally transformed by controls (mislabel, rebalance, subsample)."""

    model_config = Strict
    task: str
    transforms: list[dict[str, Any]] = Field(default_factory=list)
    label: str | None = Field(default=None, pattern=r"^[^+]+$")

    @field_validator("transforms")
    @classmethod
    def _known_transforms(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        try:
            check_transforms(v)
        except SpilloverError as e:  # reported by pydantic with the file and the field path
            raise ValueError(str(e)) from None
        return v

    @property
    def name(self) -> str:
        """Row label in the matrix: the user's label, or "task+mislabel(fraction=1.0)"."""
        if self.label:
            return self.label
        return "+".join([self.task, describe(self.transforms)]) if self.transforms else self.task


class StatsSettings(BaseModel):
    model_config = Strict
    sample: int = Field(default=256, ge=8, description="examples embedded / parsed per dataset")


class SourcesTargetsSpec(StudySpec):
    """A study that fine-tunes on `sources` and evaluates on `targets` (transfer, generalization): bare task
    names accepted as sources, row labels and targets unique."""

    sources: list[SourceSpec] = Field(min_length=1)
    targets: list[str] = Field(min_length=1)

    @field_validator("sources", mode="before")
    @classmethod
    def _bare_names(cls, v: Any) -> Any:
        return [{"task": s} if isinstance(s, str) else s for s in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _unique(self) -> SourcesTargetsSpec:
        names = [s.name for s in self.sources]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"two sources share the row label {sorted(dup)}; give one a distinct `label`")
        if len(set(self.targets)) != len(self.targets):
            raise ValueError(f"targets has duplicates: {self.targets}")
        return self

    def task_names(self) -> list[str]:
        return list(dict.fromkeys([s.task for s in self.sources] + self.targets))
