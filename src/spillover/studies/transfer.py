"""The transfer study (methods.md §1): fine-tune one adapter per source, evaluate base + every adapter on
every target, and explain the resulting matrix with latent traits and dataset statistics.

Plan: one `stats` job per distinct dataset (each source variant's training data, each target's test data),
one `eval` job for the base model per target, then per source a `train` job followed by its `eval` jobs,
and one `analyse` job over everything. Costs grow as sources + targets for training, statistics and model
loading; only evaluation is sources × targets.
"""

from __future__ import annotations

from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, Field, field_validator, model_validator

from spillover.config import Strict, StudySpec
from spillover.data.tasks import TaskSpec
from spillover.data.transforms import apply_transforms, check_transforms, describe
from spillover.engine.plan import Plan
from spillover.errors import SpilloverError

BASE = "base"


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


class TransferAnalysisSpec(BaseModel):
    model_config = Strict
    standardize: bool = False
    n_components: int | None = Field(default=None, ge=1)
    component_labels: dict[str, str] = Field(
        default_factory=dict, description='e.g. {"PC1": "classification"}'
    )
    n_boot: int = Field(default=1000, ge=10, le=100_000)
    include_diagonal: bool = False
    anomalies: int = Field(default=10, ge=1)


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


class TransferStudySpec(SourcesTargetsSpec):
    study: Literal["transfer"] = "transfer"
    analysis: TransferAnalysisSpec = Field(default_factory=TransferAnalysisSpec)
    stats: StatsSettings = Field(default_factory=StatsSettings)


def check_inputs(spec: TransferStudySpec, tasks: dict[str, TaskSpec], load) -> None:
    """Fail before any work: every source has a train split and valid transforms, every target a test split,
    and every row the jobs will read (up to `train.limit` / `eval.limit`) is valid."""
    if spec.train.mixture is not None:
        raise SpilloverError(
            "train.mixture: this study trains on one source at a time; mix tasks with "
            "the mixture study or `spillover train` with several tasks"
        )
    for i, s in enumerate(spec.sources):
        if tasks[s.task].train is None:
            raise SpilloverError(f"source '{s.task}' has no train split (set `train:` in its task spec)")
        examples = load(s.task, "train", spec.train.limit)
        try:
            apply_transforms(examples, s.transforms)
        except SpilloverError as e:  # a value that does not fit the data (a label, a size)
            raise SpilloverError(f"sources[{i}] (task '{s.task}') transforms: {e}") from None
    for t in spec.targets:
        load(t, "test", spec.eval.limit)
        if spec.eval.shots:  # demonstrations come from the target's whole train split
            load(t, "train", None)


def build_plan(spec: TransferStudySpec, fingerprints: dict[str, dict[str, str]]) -> Plan:
    """The study's DAG. `fingerprints[task]` = {"spec": ..., "train": ..., "test": ...} content hashes."""
    plan = Plan()
    model = {"model": spec.model, "precision": spec.precision}
    tr, ev = spec.train.job_params(), spec.eval.job_params()
    stats = {}
    for s in spec.sources:
        stats[("source", s.name)] = plan.add(
            "stats",
            f"stats {s.name} (train)",
            {
                **model,
                "role": "source",
                "label": s.name,
                "task": s.task,
                "data": fingerprints[s.task],
                "split": "train",
                "limit": spec.train.limit,
                "transforms": s.transforms,
                "sample": spec.stats.sample,
            },
        )
    for t in spec.targets:
        stats[("target", t)] = plan.add(
            "stats",
            f"stats {t} (test)",
            {
                **model,
                "role": "target",
                "label": t,
                "task": t,
                "data": fingerprints[t],
                "split": "test",
                "limit": spec.eval.limit,
                "transforms": [],
                "sample": spec.stats.sample,
            },
        )
    evals = {}
    for t in spec.targets:
        evals[(BASE, t)] = plan.add(
            "eval",
            f"eval base -> {t}",
            {**model, "label": BASE, "target": t, "data": fingerprints[t], "eval": ev},
        )
    for s in spec.sources:
        train_id = plan.add(
            "train",
            f"train {s.name}",
            {**model, "task": s.task, "data": fingerprints[s.task], "transforms": s.transforms, "train": tr},
        )
        for t in spec.targets:
            evals[(s.name, t)] = plan.add(
                "eval",
                f"eval {s.name} -> {t}",
                {**model, "label": s.name, "target": t, "data": fingerprints[t], "eval": ev},
                deps=[train_id],
            )
    plan.add(
        "analyse",
        "analyse + report",
        {
            "analysis": spec.analysis.model_dump(mode="json"),
            "sources": [s.name for s in spec.sources],
            "targets": spec.targets,
        },
        deps=[*stats.values(), *evals.values()],
    )
    return plan


def long_scores(score_rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The store's score rows as the (model, target, value, ...) table the analysis takes."""
    cols = ["model", "target", "metric", "value", "n", "ci_low", "ci_high"]
    return pd.DataFrame([{c: r[c] for c in cols} for r in score_rows], columns=cols)
