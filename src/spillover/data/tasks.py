"""Task specs (the flat YAML vocabulary), the built-in suite, and loading a split into Examples.

A task file is YAML with a `tasks:` list; each entry is a `TaskSpec`. Relative data paths resolve
against the task file's folder. The built-in suite lives in `data/builtin/tasks.yaml`.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from spillover.data.sources import read_rows, shown
from spillover.errors import SpilloverError, unknown_name_message
from spillover.evaluation.metrics import check_task_metric, get_metric
from spillover.harness.tasks import (
    LmEvalTarget,
    check_include,
    is_lm_eval_name,
    resolve_targets,
    target_examples,
)
from spillover.yamlio import load_yaml, validate

BUILTIN_FILE = Path(__file__).parent / "builtin" / "tasks.yaml"
_FIELD = re.compile(r"{(\w+)}")
# A classification task scores every label per row; more labels than this is a data mistake (a label per
# example) that would only surface as an out-of-memory error after training (20,002 labels: 95 GB).
MAX_LABELS = 1000


class TaskSpec(BaseModel):
    """One task: where its data is, how to prompt it, and how to score it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    type: Literal["classification", "multiple_choice", "generation"]
    train: str | None = Field(default=None, min_length=1)
    test: str = Field(min_length=1)
    input: str = "input"
    target: str = "output"
    labels: list[str] | None = Field(default=None, max_length=MAX_LABELS)
    choices: str | None = None
    metric: str
    instruction: str | None = None
    chat_template: bool = True
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    task_type: str | None = None
    domain: str | None = None
    max_new_tokens: int = Field(default=64, ge=1, le=4096)
    stop: list[str] = Field(default_factory=list)
    answer_field: str | None = None
    extract: Literal["none", "last_number", "first_line", "code"] = "none"
    tests_field: str | None = None
    references_field: str | None = None
    license: str | None = None
    source: str | None = None
    description: str | None = None

    _base_dir: Path = PrivateAttr(default=Path("."))

    @field_validator("name")
    @classmethod
    def _not_a_path_step(cls, v: str) -> str:
        if v in (".", ".."):  # task names become file and folder names (tables, job folders)
            raise ValueError("a task name cannot be '.' or '..'")
        return v

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        """A name (or alias) in the metric registry (`evaluation/metrics.py`), stored under its name."""
        try:
            return get_metric(v).name
        except SpilloverError as e:  # reported by pydantic with the file and the task
            raise ValueError(str(e)) from None

    @field_validator("input")
    @classmethod
    def _plain_placeholders(cls, v: str) -> str:
        """A template's placeholders are plain `{field}`s (rendering must not fail on the first row)."""
        if not _FIELD.search(v):
            return v  # the name of a single field
        try:
            parts = list(string.Formatter().parse(v))
        except ValueError as e:
            raise ValueError(f"malformed template: {e} (write a literal brace as {{{{ or }}}})") from None
        for _, name, spec, conversion in parts:
            if name is not None and (not re.fullmatch(r"\w+", name) or name.isdigit() or spec or conversion):
                raise ValueError("every placeholder must be a plain {field_name} (no index, ! or :)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        if self.type == "classification" and not self.labels:
            raise ValueError("a classification task needs `labels` (the list of label strings)")
        if self.type == "classification" and len(set(self.labels or [])) != len(self.labels or []):
            raise ValueError(f"`labels` has duplicates: {self.labels}")
        if self.type == "multiple_choice" and not self.choices:
            raise ValueError("a multiple_choice task needs `choices` (the field holding the list of options)")
        check_task_metric(self)  # fits the task type; the fields it needs are set
        return self

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    @property
    def input_fields(self) -> list[str]:
        """Fields the input needs: the placeholders of a template, or the single field it names."""
        return _FIELD.findall(self.input) or [self.input]

    def render_input(self, row: dict[str, Any]) -> str:
        if _FIELD.search(self.input):
            return string.Formatter().vformat(self.input, (), {k: as_text(row[k]) for k in self.input_fields})
        return as_text(row[self.input])


def as_text(value: Any) -> str:
    """A data field as text (numbers and other scalars from JSON/CSV/Parquet become their str)."""
    return value if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class Example:
    """One row ready for prompting. `options`/`gold` are set for classification and multiple choice."""

    id: str
    text: str  # the rendered input (no instruction, no chat template)
    target: str  # the training target
    row: dict[str, Any]
    options: tuple[str, ...] | None = None
    gold: int | None = None


def parse_tasks(data: Any, origin: str, base_dir: Path) -> dict[str, TaskSpec]:
    """Validate a parsed task file (`{"tasks": [...]}`) into specs keyed by name."""
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
        raise SpilloverError(f"{origin}: a task file needs a top-level `tasks:` list")
    specs: dict[str, TaskSpec] = {}
    for i, entry in enumerate(data["tasks"]):
        spec = validate(TaskSpec, entry, f"{origin}: tasks[{i}]")
        if spec.name in specs:
            raise SpilloverError(f"{origin}: tasks[{i}]: task name '{spec.name}' is defined twice")
        spec._base_dir = base_dir
        specs[spec.name] = spec
    return specs


def load_task_file(path: str | Path) -> dict[str, TaskSpec]:
    path = Path(path)
    return parse_tasks(load_yaml(path), str(path), path.parent.resolve())


def builtin_tasks() -> dict[str, TaskSpec]:
    return load_task_file(BUILTIN_FILE)


def resolve_tasks(
    names: list[str], tasks_file: str | Path | None = None, lm_eval_include: Sequence[str | Path] = ()
) -> list[TaskSpec | LmEvalTarget]:
    """Look up task names in the user's task file first, then the built-in suite. `lm_eval:TASK` names an
    lm-evaluation-harness task, found in the `lm_eval_include` folders, then lm-eval's own (`harness`)."""
    known = builtin_tasks()
    if tasks_file is not None:
        known.update(load_task_file(tasks_file))
    if lm_eval_include:
        check_include(lm_eval_include)
    missing = [n for n in names if n not in known and not is_lm_eval_name(n)]
    if missing:
        raise SpilloverError(unknown_name_message("task", missing[0], known))
    harness = [n for n in names if is_lm_eval_name(n)]
    targets = resolve_targets(harness, lm_eval_include) if harness else {}
    return [targets[n] if n in targets else known[n] for n in names]


def load_examples(task: TaskSpec, split: Literal["train", "test"], limit: int | None = None) -> list[Example]:
    """Read and check one split; every problem names the file and line."""
    if isinstance(task, LmEvalTarget):  # lm-eval reads its own documents (`harness.tasks`)
        if split == "test":
            return target_examples(task, limit)
        raise SpilloverError(f"{task.name}: an lm-eval task is a target only; spillover does not train on it")
    source = task.train if split == "train" else task.test
    if source is None:
        raise SpilloverError(f"task '{task.name}' has no {split} split (set `{split}:` in its spec)")
    rows = read_rows(source, task.base_dir, split)
    if limit is not None:
        rows = rows[:limit]
    return [_to_example(task, where, row, i) for i, (where, row) in enumerate(rows)]


def _to_example(task: TaskSpec, where: str, row: dict[str, Any], index: int) -> Example:
    needed = [*task.input_fields, task.target, task.answer_field, task.tests_field, task.choices]
    for field in filter(None, needed):
        if field not in row or row[field] is None:
            have = ", ".join(sorted(row)) or "(none)"
            if getattr(where, "linked", False):  # field names of a CSV are its first line: never quote it
                have = f"{len(row)} other fields (not shown: the data file is a symbolic link)"
            raise SpilloverError(
                f"{where}: missing field '{field}' (task '{task.name}'); the row has: {have}"
            )
    options, gold = _options_and_gold(task, row, where)
    target = as_text(row[task.target])
    return Example(as_text(row.get("id", index)), task.render_input(row), target, row, options, gold)


def _options_and_gold(
    task: TaskSpec, row: dict[str, Any], where: str
) -> tuple[tuple[str, ...] | None, int | None]:
    gold_value = row[task.target]
    if task.type == "classification":
        options = tuple(task.labels or ())
        if gold_value not in options:
            raise SpilloverError(
                f"{where}: label {shown(where, gold_value)} is not one of the task's labels: {', '.join(options)}"
            )
        return options, options.index(gold_value)
    if task.type == "multiple_choice":
        options = row[task.choices]
        if not isinstance(options, list) or len(options) < 2:
            raise SpilloverError(f"{where}: field '{task.choices}' must be a list of at least 2 options")
        options = tuple(as_text(o) for o in options)
        return options, _gold_index(gold_value, options, where)
    return None, None


def _gold_index(value: Any, options: tuple[str, ...], where: str) -> int:
    """The gold option given as an index, the option's text, or its letter (A, B, ...)."""
    if isinstance(value, int) and 0 <= value < len(options):
        return value
    if value in options:
        return options.index(value)
    if isinstance(value, str) and len(value) == 1 and 0 <= ord(value.upper()) - 65 < len(options):
        return ord(value.upper()) - 65
    raise SpilloverError(
        f"{where}: gold answer {shown(where, value)} is neither an option, its index, nor its letter"
    )
