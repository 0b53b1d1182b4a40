"""The transfer study's spec (methods.md §1): sources (tasks, optionally transformed by controls), targets,
and the analysis settings; and the checks every input passes before any work."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from spillover.config import Strict
from spillover.data.tasks import TaskSpec
from spillover.data.transforms import apply_transforms
from spillover.errors import SpilloverError
from spillover.harness.tasks import LmEvalTarget, check_target
from spillover.studies.specs import SourcesTargetsSpec, StatsSettings


class TransferAnalysisSpec(BaseModel):
    model_config = Strict
    standardize: bool = False
    n_components: int | None = Field(default=None, ge=1)
    component_labels: dict[str, str] = Field(
        default_factory=dict, description='e.g. {"PC1": "classification"}'
    )
    n_boot: int = Field(default=1000, ge=10, le=100_000)
    null_permutations: int = Field(
        default=1000, ge=1000, le=100_000, description="column shuffles of Δ for the PCA's permutation null"
    )
    include_diagonal: bool = False
    anomalies: int = Field(default=10, ge=1)


class TransferStudySpec(SourcesTargetsSpec):
    study: Literal["transfer"] = "transfer"
    analysis: TransferAnalysisSpec = Field(default_factory=TransferAnalysisSpec)
    stats: StatsSettings = Field(default_factory=StatsSettings)

    def lm_eval_targets(self) -> list[str]:
        return self.targets


def check_inputs(spec: TransferStudySpec, tasks: dict[str, TaskSpec], load) -> None:
    """Fail before any work: every source has a train split and valid transforms, every target a test split,
    and every row the jobs will read (up to `train.limit` / `eval.limit`) is valid."""
    if spec.train.mixture is not None:
        raise SpilloverError(
            "train.mixture: this study trains on one source at a time; mix tasks with "
            "the mixture study or `spillover train` with several tasks"
        )
    for i, s in enumerate(spec.sources):
        if isinstance(tasks[s.task], LmEvalTarget):
            raise SpilloverError(f"sources[{i}]: {s.task} is an lm-eval task: a target only, not trained on")
        if tasks[s.task].train is None:
            raise SpilloverError(f"source '{s.task}' has no train split (set `train:` in its task spec)")
        examples = load(s.task, "train", spec.train.limit)
        try:
            apply_transforms(examples, s.transforms)
        except SpilloverError as e:  # a value that does not fit the data (a label, a size)
            raise SpilloverError(f"sources[{i}] (task '{s.task}') transforms: {e}") from None
    for t in spec.targets:
        if isinstance(tasks[t], LmEvalTarget):  # lm-eval builds its prompts and few-shot blocks itself
            check_target(tasks[t], spec.eval.limit, spec.eval.shots)
            continue
        load(t, "test", spec.eval.limit)
        if spec.eval.shots:  # demonstrations come from the target's whole train split
            load(t, "train", None)
