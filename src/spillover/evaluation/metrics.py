"""Metrics: a registry of per-example scorers carrying their direction, answer extraction, bootstrap CIs.

A metric scores one example at a time: `metric.score(prediction, example, task) -> float` where
`prediction` is the predicted option text (classification, multiple choice) or the raw generated text
(generation; the metric applies `task.extract` itself). The task's value is the mean of those scores
(lm-eval `api/metrics.py`: direction and aggregation travel with the metric).

The gold answer of a generation task is `row[task.answer_field]` when the task names one, else its
`target` passed through the same extraction as the prediction (so a gsm8k-style target
"...\\n#### 9" yields "9").
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache

import numpy as np

from spillover.data.tasks import Example, TaskSpec, as_text
from spillover.evaluation.sandbox import run_tests
from spillover.registry import Registry

Scorer = Callable[[str, Example, TaskSpec], float]


@dataclass(frozen=True)
class Metric:
    """A named per-example scorer; the task value is the mean of the scores."""

    name: str
    higher_is_better: bool
    score: Scorer


METRICS: Registry[Metric] = Registry("metric")


def _register(name: str, higher_is_better: bool = True) -> Callable[[Scorer], Scorer]:
    def add(fn: Scorer) -> Scorer:
        METRICS.register(name)(Metric(name, higher_is_better, fn))
        return fn

    return add


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
        return as_text(example.row[task.answer_field])
    return extract_answer(example.target, task.extract)


def gold_references(example: Example, task: TaskSpec) -> list[str]:
    """The reference texts for Rouge: `row[references_field]` (a list or one string), else the target."""
    if not task.references_field:
        return [example.target]
    refs = example.row.get(task.references_field)
    refs = [refs] if isinstance(refs, str) else list(refs or [])
    return [as_text(r) for r in refs] or [example.target]


# ---------------------------------------------------------------------------------------------- metrics


@_register("accuracy")
def accuracy(prediction: str, example: Example, task: TaskSpec) -> float:
    """Classification / multiple choice: the predicted option is the gold one. Generation: the extracted
    answer equals the gold answer after stripping whitespace."""
    if example.options is not None and example.gold is not None:
        return float(prediction == example.options[example.gold])
    return float(extract_answer(prediction, task.extract).strip() == gold_answer(example, task).strip())


@_register("exact_match")
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


@_register("rouge_l")
def rouge_l(prediction: str, example: Example, task: TaskSpec) -> float:
    """Max Rouge-L F over the references of the example."""
    pred = extract_answer(prediction, task.extract)
    return max(rouge_l_f(pred, ref) for ref in gold_references(example, task))


@_register("pass_at_1")
def pass_at_1(prediction: str, example: Example, task: TaskSpec) -> float:
    """1.0 if the extracted code passes the example's tests in the sandbox (one greedy sample)."""
    tests = example.row[task.tests_field] if task.tests_field else ""
    tests = "\n".join(map(str, tests)) if isinstance(tests, list) else as_text(tests)
    return float(run_tests(extract_answer(prediction, task.extract), tests).passed)


# -------------------------------------------------------------------------------------------- bootstrap


def bootstrap_ci(
    values: Sequence[float], n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: resample `values` with replacement `n_boot` times.

    Deterministic for a seed. An empty input gives (nan, nan); a single value v gives (v, v).
    """
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    step = max(1, 2_000_000 // data.size)  # bound the (boots, n) index matrix to ~16 MB
    for start in range(0, n_boot, step):
        stop = min(n_boot, start + step)
        means[start:stop] = data[rng.integers(0, data.size, size=(stop - start, data.size))].mean(axis=1)
    low, high = np.percentile(means, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)
