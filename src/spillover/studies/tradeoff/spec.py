"""The tradeoff study's spec (methods.md §4): domains, general tasks, the grid of learning rates × methods ×
supervision formats, and the token / code-length settings; and the checks every input passes before any work.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from spillover.config import Strict, StudySpec, TrainSettings
from spillover.data.tasks import TaskSpec
from spillover.errors import SpilloverError

FORMATS = ("target", "label_only")
# general text for ΔCL_general when no general task is a generation task: SciTLDR's one-sentence summaries
# (built-in, human-written English). Label tokens of classification tasks are not general text.
DEFAULT_CL_TEXT = "scitldr"


class MethodSpec(BaseModel):
    """One training recipe of the grid; unset fields take the study's `train:` values."""

    model_config = Strict
    label: str = Field(pattern=r"^[A-Za-z0-9_.+\-]+$")
    method: Literal["lora", "full"] | None = None
    objective: str | None = None
    objective_params: dict[str, Any] | None = None
    regularizers: dict[str, dict[str, Any]] | None = None
    learning_rates: list[float] | None = Field(default=None, min_length=1, description="replaces the study's")
    wise_ft: list[float] = Field(default_factory=list, description="WiSE-FT alphas in (0, 1) to evaluate")

    @model_validator(mode="after")
    def _alphas(self) -> MethodSpec:
        bad = [a for a in self.wise_ft if not 0.0 < a < 1.0]
        if bad:
            raise ValueError(f"wise_ft alpha {bad[0]} is not allowed; use numbers strictly between 0 and 1")
        if len(set(self.wise_ft)) != len(self.wise_ft):
            raise ValueError(f"wise_ft has duplicates: {self.wise_ft}")
        if any(not lr > 0 for lr in self.learning_rates or []):
            raise ValueError(f"learning_rates must be > 0, got {self.learning_rates}")
        return self

    def overrides(self) -> dict[str, Any]:
        fields = ("method", "objective", "objective_params", "regularizers")
        return {k: getattr(self, k) for k in fields if getattr(self, k) is not None}


class TokenSettings(BaseModel):
    model_config = Strict
    thresholds: list[float] = Field(default=[0.1, 0.5], min_length=1, description="hard token: p below this")
    examples: int = Field(default=4, ge=0, le=50, description="example sequences shown coloured by p")
    bins: int = Field(default=20, ge=2, le=200)

    @model_validator(mode="after")
    def _in_unit(self) -> TokenSettings:
        if any(not 0.0 < t < 1.0 for t in self.thresholds):
            raise ValueError(f"thresholds must be in (0, 1), got {self.thresholds}")
        return self


class CodeLengthSettings(BaseModel):
    model_config = Strict
    tasks: list[str] | None = Field(
        default=None,
        description=f"general text for ΔCL_general (default: the generation tasks of `general`, else "
        f"the built-in {DEFAULT_CL_TEXT})",
    )
    limit: int | None = Field(default=64, ge=1, description="test examples per task scored (first N)")
    batch_size: int = Field(default=8, ge=1, le=4096)


class TradeoffStudySpec(StudySpec):
    study: Literal["tradeoff"] = "tradeoff"
    domains: list[str] = Field(min_length=1)
    general: list[str] = Field(min_length=1)
    learning_rates: list[float] = Field(min_length=1)
    methods: list[MethodSpec] = Field(
        default_factory=lambda: [MethodSpec(label="cross_entropy")], min_length=1
    )
    formats: list[Literal["target", "label_only"]] = Field(default=["target"], min_length=1)
    tokens: TokenSettings = Field(default_factory=TokenSettings)
    codelength: CodeLengthSettings = Field(default_factory=CodeLengthSettings)
    match_tolerance: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="largest domain-score difference at which two methods' runs count as matched (the "
        "matched-domain-score comparisons); farther pairs are listed in matched_pairs, not compared",
    )

    @model_validator(mode="after")
    def _consistent(self) -> TradeoffStudySpec:
        for name, values in (
            ("domains", self.domains),
            ("general", self.general),
            ("formats", self.formats),
            ("methods", [m.label for m in self.methods]),
        ):
            if len(set(values)) != len(values):
                raise ValueError(f"{name} has duplicates: {values}")
        both = sorted(set(self.domains) & set(self.general))
        if both:
            raise ValueError(f"{both} is both a domain and a general task; a task can be only one")
        both = sorted(set(self.domains) & set(self.codelength.tasks or []))
        if both:
            raise ValueError(f"codelength.tasks {both} is a domain; list general data only")
        if any(not lr > 0 for lr in self.learning_rates):
            raise ValueError(f"learning_rates must be > 0, got {self.learning_rates}")
        for m in self.methods:
            try:
                run_settings(self, m, self.learning_rates[0])
            except SpilloverError as e:
                raise ValueError(f"methods[{m.label}]: {e}") from None
        return self

    def task_names(self) -> list[str]:
        """Every task the study reads (the default code-length text included: it is resolved before the
        general tasks' types are known)."""
        return list(dict.fromkeys(self.domains + self.general + (self.codelength.tasks or [DEFAULT_CL_TEXT])))

    def cl_general(self, tasks: Mapping[str, TaskSpec]) -> list[str]:
        """The general text of the code-length view: `codelength.tasks`, else the generation tasks among
        `general` (their targets are text), else the built-in `DEFAULT_CL_TEXT`."""
        generation = [t for t in self.general if tasks[t].type == "generation"]
        return self.codelength.tasks or generation or [DEFAULT_CL_TEXT]


def run_settings(spec: TradeoffStudySpec, method: MethodSpec, lr: float) -> TrainSettings:
    """The study's `train:` with the method's overrides and this learning rate, validated."""
    from pydantic import ValidationError

    data = spec.train.model_dump(exclude={"seeds"}) | method.overrides() | {"learning_rate": lr}
    try:
        return TrainSettings.model_validate(data)
    except ValidationError as e:
        raise SpilloverError(
            "; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())
        ) from None


def check_inputs(spec: TradeoffStudySpec, tasks: dict[str, TaskSpec], load) -> None:
    """Fail before any work: domains have a train split (and an answer field for label_only), every task a
    test split."""
    for d in spec.domains:
        task = tasks[d]
        if task.train is None:
            raise SpilloverError(f"domain '{d}' has no train split (set `train:` in its task spec)")
        load(d, "train", 1)
        if "label_only" in spec.formats and (task.answer_field is None or task.answer_field == task.target):
            raise SpilloverError(
                f"formats: label_only needs a domain whose target has reasoning and a separate bare answer "
                f"(`answer_field`, e.g. gsm8k); '{d}' has none"
            )
    for t in spec.task_names():
        load(t, "test", 1)
