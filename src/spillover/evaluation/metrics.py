"""Metrics: the one registry of metric names. Each metric is registered once, here, with everything the rest
of the library asks of it: the request kinds it scores, its direction, its aggregation and its per-example
scorer (lm-eval `api/metrics.py`: direction and aggregation travel with the metric). Task specs validate
their `metric:` against this registry and `evaluate.py` dispatches through it, so adding a metric touches
this file only (or none: `register_metric` from user code or a test).

A metric scores one example at a time: `metric.score(prediction, example, task) -> float` where
`prediction` is the predicted option text (log-likelihood requests: classification, multiple choice) or the
raw generated text (generation; the metric applies `task.extract` itself). The task's value is the
metric's aggregation of those scores (the mean for every score metric), with a bootstrap interval of
that same aggregation.

A *pair* metric (`pairs=True`: macro-F1, balanced accuracy) is not a mean of per-example scores: its
aggregation reads every example's (predicted option index, gold option index) record, an (n, 2) int array,
through the confusion matrix. Its `score` is still per example (the row's correctness, written to the
predictions file as `correct`), but the task's value and its bootstrap interval (examples resampled) are
the statistic of the pairs. `REPORTED_BESIDE` names the metrics every task of a type reports beside its own
(classification: accuracy, macro-F1 and balanced accuracy, so a collapse to the majority label is visible).

The gold answer of a generation task is `row[task.answer_field]` when the task names one, else its
`target` passed through the same extraction as the prediction (so a gsm8k-style target
"...\\n#### 9" yields "9").
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from spillover.errors import SpilloverError, unknown_name_message
from spillover.evaluation.sandbox import run_tests
from spillover.registry import Registry

if TYPE_CHECKING:  # data.tasks validates task specs against this registry: no runtime import back
    from spillover.data.tasks import Example, TaskSpec

Scorer = Callable[[str, "Example", "TaskSpec"], float]
# Reduces the example axis: scores (n,) -> (), (B, n) -> (B,); a pair metric's (n, 2) -> (), (B, n, 2) -> (B,)
Aggregation = Callable[[np.ndarray], Any]
RequestKind = Literal["loglikelihood", "generation"]
# how each task type is run: every option scored by log-likelihood, or text generated
REQUEST_KIND: dict[str, RequestKind] = {
    "classification": "loglikelihood",
    "multiple_choice": "loglikelihood",
    "generation": "generation",
}
# metrics every task of a type reports beside its own metric (the own metric is not repeated)
REPORTED_BESIDE: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "macro_f1", "balanced_accuracy"),
}


def mean(scores: np.ndarray) -> np.ndarray:
    """The default aggregation: the mean over the last axis."""
    return scores.mean(axis=-1)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)  # as data.tasks.as_text (no import back)


@dataclass(frozen=True)
class Metric:
    """A named per-example scorer and what goes with it.

    `kinds`: the request kinds it can score ("loglikelihood": the prediction is the best option's text;
    "generation": the generated text). `requires`: task fields that must be set, each with what it holds.
    `gold`: what a generation task's predictions file shows as the gold answer. `aliases`: other spellings
    accepted in task specs (stored under `name`). `pairs`: the aggregation reads (predicted index, gold
    index) records, (n, 2), instead of the scores (see the module docstring).
    """

    name: str
    kinds: frozenset[RequestKind]
    score: Scorer
    higher_is_better: bool = True
    aggregation: Aggregation = mean
    requires: Mapping[str, str] = field(default_factory=dict)
    gold: Callable[[Example, TaskSpec], Any] | None = None
    aliases: tuple[str, ...] = ()
    pairs: bool = False

    def aggregate(self, values: Sequence[float] | Sequence[Sequence[int]]) -> float:
        """The task's value from its per-example scores (n,), or (pred, gold) index pairs (n, 2) when
        `pairs`."""
        return float(self.aggregation(np.asarray(values, dtype=np.float64)))

    def of_predictions(self, pred: Sequence[int], gold: Sequence[int]) -> float:
        """A pair metric's value from predicted and gold option indices, (n,) each: the
        `statistic(pred, gold)` form `analysis.paired.paired_difference_stat` takes."""
        return self.aggregate(np.stack([np.asarray(pred), np.asarray(gold)], axis=-1))

    def fits(self, task_type: str) -> bool:
        return REQUEST_KIND[task_type] in self.kinds

    def gold_of(self, example: Example, task: TaskSpec) -> Any:
        return (self.gold or gold_answer)(example, task)


METRICS: Registry[Metric] = Registry("metric")


def register_metric(
    name: str,
    *,
    kinds: Iterable[RequestKind],
    higher_is_better: bool = True,
    aggregation: Aggregation = mean,
    requires: Mapping[str, str] | None = None,
    gold: Callable[[Example, TaskSpec], Any] | None = None,
    aliases: Sequence[str] = (),
    pairs: bool = False,
) -> Callable[[Scorer], Scorer]:
    """Decorator: register a per-example scorer as metric `name` (usable as `metric: name` in task files)."""
    kinds = frozenset(kinds)
    unknown = kinds - set(REQUEST_KIND.values())
    if not kinds or unknown:
        raise ValueError(
            f"metric '{name}': kinds must be loglikelihood and/or generation, got {sorted(kinds)}"
        )
    taken = set(METRICS.names()) | {a for known in METRICS for a in METRICS.get(known).aliases}
    clash = sorted(taken & set(aliases)) or ([name] if name in taken - set(METRICS.names()) else [])
    if clash:  # a name twice is refused by the registry itself
        raise ValueError(f"metric '{name}': '{clash[0]}' already names a metric")

    def add(fn: Scorer) -> Scorer:
        metric = Metric(
            name, kinds, fn, higher_is_better, aggregation, dict(requires or {}), gold, tuple(aliases), pairs
        )
        METRICS.register(name)(metric)
        return fn

    return add


def get_metric(name: str) -> Metric:
    """The metric registered as `name` or with `name` among its aliases.

    Raises SpilloverError "unknown metric 'x'; did you mean 'y'? available: ..." for any other name."""
    if name in METRICS:
        return METRICS.get(name)
    for known in METRICS:
        if name in METRICS.get(known).aliases:
            return METRICS.get(known)
    raise SpilloverError(unknown_name_message("metric", str(name), METRICS.names()))


def metrics_for(task_type: str) -> list[str]:
    """Names of the metrics that can score a task of this type."""
    return [n for n in METRICS if METRICS.get(n).fits(task_type)]


def reported_metrics(task: TaskSpec) -> list[Metric]:
    """The task's own metric first, then the metrics its type reports beside it (`REPORTED_BESIDE`)."""
    own = get_metric(task.metric)
    return [own, *(get_metric(n) for n in REPORTED_BESIDE.get(task.type, ()) if n != own.name)]


def check_task_metric(task: TaskSpec) -> Metric:
    """The task's metric, checked against the task: it scores this task type, the fields it needs are set.
    Raises ValueError (TaskSpec reports it with the file and the task)."""
    metric = get_metric(task.metric)
    if not metric.fits(task.type):
        raise ValueError(
            f"metric '{metric.name}' does not fit a {task.type} task; "
            f"use one of: {', '.join(metrics_for(task.type))}"
        )
    for field_name, what in metric.requires.items():
        if not getattr(task, field_name):
            raise ValueError(f"metric {metric.name} needs `{field_name}` ({what})")
    return metric


# ------------------------------------------------------------------------------------ answer extraction

_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
_MARKER = re.compile(r"####\s*(-?\$?\d[\d,]*(?:\.\d+)?)")
_PUNCTUATION = frozenset(string.punctuation)
_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL | re.IGNORECASE)


def canonical_number(text: str) -> str:
    """'$1,234.50' -> '1234.5', '18.00' -> '18', '7.' -> '7': one spelling per value."""
    text = text.replace(",", "").replace("$", "").rstrip(".")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def last_number(text: str) -> str:
    """The `#### N` answer marker if present (gsm8k), else the last number in the text; '' if none."""
    marker = _MARKER.search(text)
    if marker:
        return canonical_number(marker.group(1))
    found = _NUMBER.findall(text)
    return canonical_number(found[-1]) if found else ""


def first_line(text: str) -> str:
    """The first non-empty line, stripped."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def code_block(text: str) -> str:
    """The body of the first ```python (or bare ```) fenced block; the whole text when there is none.

    An unclosed fence (generation cut by max_new_tokens) still yields its body.
    """
    found = _FENCE.search(text)
    return found.group(1) if found else text


EXTRACTORS: dict[str, Callable[[str], str]] = {
    "none": lambda text: text,
    "last_number": last_number,
    "first_line": first_line,
    "code": code_block,
}


def extract_answer(text: str, mode: str) -> str:
    return EXTRACTORS[mode](text)


# ---------------------------------------------------------------------------------------- normalisation


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lower-case, drop punctuation, articles and extra whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _as_number(text: str) -> Decimal | None:
    try:
        return Decimal(canonical_number(text.strip()))
    except InvalidOperation:
        return None


def gold_answer(example: Example, task: TaskSpec) -> str:
    """What a generation is compared against (see the module docstring)."""
    if task.answer_field:
        return _as_text(example.row[task.answer_field])
    return extract_answer(example.target, task.extract)


def gold_references(example: Example, task: TaskSpec) -> list[str]:
    """The reference texts for Rouge: `row[references_field]` (a list or one string), else the target."""
    if not task.references_field:
        return [example.target]
    refs = example.row.get(task.references_field)
    refs = [refs] if isinstance(refs, str) else list(refs or [])
    return [_as_text(r) for r in refs] or [example.target]


# ---------------------------------------------------------------------------------------------- metrics


@register_metric("accuracy", kinds=("loglikelihood", "generation"), aliases=("acc",))
def accuracy(prediction: str, example: Example, task: TaskSpec) -> float:
    """Classification / multiple choice: the predicted option is the gold one. Generation: the extracted
    answer equals the gold answer after stripping whitespace."""
    if example.options is not None and example.gold is not None:
        return float(prediction == example.options[example.gold])
    return float(extract_answer(prediction, task.extract).strip() == gold_answer(example, task).strip())


@register_metric("exact_match", kinds=("generation",))
def exact_match(prediction: str, example: Example, task: TaskSpec) -> float:
    """SQuAD-normalised equality of the extracted answer and the gold answer; two numbers compare by value
    (so '-5' != '5' and '18.00' == '18', which SQuAD's punctuation stripping would get wrong)."""
    pred, gold = extract_answer(prediction, task.extract), gold_answer(example, task)
    if task.extract == "last_number":
        a, b = _as_number(pred), _as_number(gold)
        if a is not None and b is not None:
            return float(a == b)
    return float(normalize_answer(pred) == normalize_answer(gold))


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    # Porter stemming as in the rouge_score README and most summarisation papers; tokenisation lower-cases
    # and keeps [a-z0-9] runs only.
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l_f(prediction: str, reference: str) -> float:
    """Rouge-L F-measure (LCS-based) of one prediction against one reference."""
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure)


@register_metric("rouge_l", kinds=("generation",), gold=gold_references, aliases=("rougeL",))
def rouge_l(prediction: str, example: Example, task: TaskSpec) -> float:
    """Max Rouge-L F over the references of the example."""
    pred = extract_answer(prediction, task.extract)
    return max(rouge_l_f(pred, ref) for ref in gold_references(example, task))


@register_metric(
    "pass_at_1",
    kinds=("generation",),
    requires={"tests_field": "the field with the unit tests"},
    gold=lambda example, task: example.row[task.tests_field],
    aliases=("pass@1",),
)
def pass_at_1(prediction: str, example: Example, task: TaskSpec) -> float:
    """1.0 if the extracted code passes the example's tests in the sandbox (one greedy sample)."""
    tests = example.row[task.tests_field] if task.tests_field else ""
    tests = "\n".join(map(str, tests)) if isinstance(tests, list) else _as_text(tests)
    return float(run_tests(extract_answer(prediction, task.extract), tests).passed)


# ------------------------------------------------------------------------- pair metrics (confusion matrix)


def class_counts(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class (true positives, predicted, gold) counts of (predicted, gold) index pairs.

    pairs: (..., n, 2) -> three (..., K) arrays, K = 1 + the largest index seen (classes are option indices).
    """
    idx = np.asarray(pairs).astype(np.int64).reshape(*np.shape(pairs)[:-1] or (0,), 2)
    pred, gold = idx[..., 0], idx[..., 1]
    k = int(idx.max()) + 1 if idx.size else 1
    lead, n = pred.shape[:-1], pred.shape[-1]
    if n == 0:
        return (np.zeros((*lead, k)),) * 3
    offsets = np.arange(int(np.prod(lead, dtype=np.int64)))[:, None] * k  # one block of k bins per resample

    def per_class(labels: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        flat = (labels.reshape(-1, n) + offsets).ravel()
        w = None if weights is None else weights.reshape(-1).astype(np.float64)
        return np.bincount(flat, weights=w, minlength=offsets.size * k).reshape(*lead, k)

    return per_class(gold, pred == gold), per_class(pred), per_class(gold)


def macro_f1_of(pairs: np.ndarray) -> np.ndarray:
    """Unweighted mean over classes of F1_k = 2·TP_k / (predicted_k + gold_k), over the classes that occur
    as a prediction or a gold label (scikit-learn's `f1_score(average="macro")`). (..., n, 2) -> (...)."""
    tp, n_pred, n_gold = class_counts(pairs)
    seen = n_pred + n_gold
    f1 = np.divide(2 * tp, seen, out=np.zeros(seen.shape), where=seen > 0)
    with np.errstate(invalid="ignore"):
        return f1.sum(axis=-1) / (seen > 0).sum(axis=-1)


def balanced_accuracy_of(pairs: np.ndarray) -> np.ndarray:
    """Unweighted mean over the gold classes of recall_k = TP_k / gold_k (scikit-learn's
    `balanced_accuracy_score`): a model that always predicts the majority label scores 1/K. (..., n, 2) ->
    (...)."""
    tp, _, n_gold = class_counts(pairs)
    recall = np.divide(tp, n_gold, out=np.zeros(n_gold.shape), where=n_gold > 0)
    with np.errstate(invalid="ignore"):
        return recall.sum(axis=-1) / (n_gold > 0).sum(axis=-1)


def _option_hit(prediction: str, example: Example, task: TaskSpec) -> float:
    """The per-example score of a pair metric (written as the row's `correct`): the gold option chosen."""
    return float(prediction == example.options[example.gold])


register_metric("macro_f1", kinds=("loglikelihood",), aggregation=macro_f1_of, pairs=True)(_option_hit)
register_metric("balanced_accuracy", kinds=("loglikelihood",), aggregation=balanced_accuracy_of, pairs=True)(
    _option_hit
)


# -------------------------------------------------------------------------------------------- bootstrap


def bootstrap_ci(
    values: Sequence[float],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    statistic: Aggregation = mean,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` (a metric's aggregation; the mean by default): resample
    the examples (rows of `values`: (n,) scores or a pair metric's (n, 2) records) with replacement
    `n_boot` times.

    Deterministic for a seed. An empty input gives (nan, nan); a single value v gives (v, v).
    """
    data = np.asarray(values, dtype=np.float64)
    n = len(data)
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    step = max(1, 2_000_000 // data.size)  # bound the resampled (boots, n, ...) array to ~16 MB
    for start in range(0, n_boot, step):
        stop = min(n_boot, start + step)
        stats[start:stop] = statistic(data[rng.integers(0, n, size=(stop - start, n))])
    low, high = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)
