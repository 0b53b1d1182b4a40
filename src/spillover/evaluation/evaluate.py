"""Evaluate a model on tasks: load the test split, prompt (k-shot demos from the TRAIN split), score or
generate, compute the task's metric with a bootstrap CI, and write per-example predictions as JSONL.

Everything metric-specific comes from the metric registry (`metrics.py`): the task type's request kind
picks the runner (log-likelihood scoring of every option, `scoring.py`, for classification and multiple
choice; greedy decoding, `generation.py`, for generation), and the task's metric scores each example,
aggregates the scores and says which direction is better. A classification task also reports the metrics
`metrics.REPORTED_BESIDE` names (accuracy, macro-F1, balanced accuracy) in `TaskResult.beside`, each with
its own bootstrap interval over the same examples.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from spillover.atomic import atomic_write_text
from spillover.data.prompts import render_context, sample_demos
from spillover.data.tasks import Example, TaskSpec, load_examples
from spillover.evaluation.generation import generate_for_task
from spillover.evaluation.metrics import (
    REQUEST_KIND,
    Metric,
    bootstrap_ci,
    extract_answer,
    get_metric,
    reported_metrics,
)
from spillover.evaluation.scoring import ScoredExample, score_examples
from spillover.harness.tasks import LmEvalTarget, evaluate_target
from spillover.models.load import Precision

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricValue:
    """One more metric of the same evaluation (same examples): its value and bootstrap interval."""

    metric: str
    value: float
    ci_low: float
    ci_high: float
    higher_is_better: bool = True


@dataclass(frozen=True)
class TaskResult:
    """The score of one model on one task, with what is needed to interpret and reproduce it."""

    task: str
    metric: str
    value: float
    n: int
    ci_low: float
    ci_high: float
    higher_is_better: bool = True
    shots: int = 0
    seed: int = 0
    extra: dict[str, float] = field(default_factory=dict)  # e.g. acc_norm, seconds
    label_distribution: dict[str, int] = field(default_factory=dict)  # predicted labels (classification)
    gold_distribution: dict[str, int] = field(default_factory=dict)
    predictions_path: str | None = None
    beside: list[MetricValue] = field(default_factory=list)  # REPORTED_BESIDE the task's metric


def evaluate_task(
    model,
    tokenizer,
    task: TaskSpec | LmEvalTarget,
    *,
    limit: int | None = None,
    shots: int = 0,
    seed: int = 0,
    batch_size: int = 16,
    precision: Precision | None = None,
    predictions_path: str | Path | None = None,
    compile: Literal["auto"] | bool = "auto",
) -> TaskResult:
    """Evaluate `model` on the test split of `task` (first `limit` rows) with `shots` train demos.
    `compile=True`: run scoring's forward passes compiled (`evaluation.scoring`; generation stays eager).
    An lm-eval target (`lm_eval:TASK`) is built, prompted and scored by lm-eval (`harness.tasks`)."""
    if isinstance(task, LmEvalTarget):
        settings = {"limit": limit, "shots": shots, "seed": seed, "batch_size": batch_size}
        return evaluate_target(
            model,
            tokenizer,
            task,
            **settings,
            precision=precision,
            predictions_path=predictions_path,
            compile=compile,
        )
    metric = get_metric(task.metric)
    run = _RUNNERS[REQUEST_KIND[task.type]]
    examples = load_examples(task, "test", limit)
    demos = draw_demos(task, examples, shots, seed)
    start = time.perf_counter()
    with _inference(model, precision):
        records, scores, extra = run(model, tokenizer, task, metric, examples, demos, batch_size, compile)
    seconds = time.perf_counter() - start
    own = metric_value(metric, _pairs(records) if metric.pairs else scores, seed)
    beside = [
        metric_value(m, metric_inputs(m, task, examples, records), seed) for m in reported_metrics(task)[1:]
    ]
    if predictions_path is not None:
        write_jsonl_atomic(Path(predictions_path), records)
    result = TaskResult(
        task=task.name,
        metric=metric.name,
        value=own.value,
        n=len(scores),
        ci_low=own.ci_low,
        ci_high=own.ci_high,
        higher_is_better=metric.higher_is_better,
        shots=shots,
        seed=seed,
        extra={**extra, "seconds": round(seconds, 3)},
        label_distribution=_distribution(task, examples, records, "prediction_index"),
        gold_distribution=_distribution(task, examples, records, "gold_index"),
        predictions_path=str(predictions_path) if predictions_path is not None else None,
        beside=beside,
    )
    log.info(
        "%s: %s = %.4f [%.4f, %.4f] on %d examples in %.1fs (%.1f examples/s)",
        task.name,
        task.metric,
        result.value,
        result.ci_low,
        result.ci_high,
        result.n,
        seconds,
        result.n / max(seconds, 1e-9),
    )
    return result


def _pairs(records: Sequence[dict[str, Any]]) -> list[tuple[int, int]]:
    return [(r["prediction_index"], r["gold_index"]) for r in records]


def metric_inputs(metric: Metric, task: TaskSpec, examples: Sequence[Example], records) -> list:
    """What `metric` aggregates over the evaluated examples: (predicted, gold) option indices for a pair
    metric, else each example's score of its prediction record."""
    if metric.pairs:
        return _pairs(records)
    return [metric.score(r["prediction"], ex, task) for ex, r in zip(examples, records, strict=True)]


def metric_value(metric: Metric, values: Sequence, seed: int = 0) -> MetricValue:
    """`metric`'s aggregation of `values` (`metric_inputs`), with a seeded bootstrap interval."""
    low, high = bootstrap_ci(values, seed=seed, statistic=metric.aggregation)
    return MetricValue(metric.name, metric.aggregate(values), low, high, metric.higher_is_better)


def _distribution(task: TaskSpec, examples, records, key: str) -> dict[str, int]:
    """Counts of predicted (or gold) labels, every label listed (zeros too); empty for generation tasks."""
    if REQUEST_KIND[task.type] == "generation":
        return {}
    counts = Counter(_label(task, r[key], ex) for ex, r in zip(examples, records, strict=True))
    return {label: counts[label] for label in task.labels or sorted(counts)}


def evaluate_tasks(
    model, tokenizer, tasks: Sequence[TaskSpec], *, predictions_dir: str | Path | None = None, **kwargs: Any
) -> list[TaskResult]:
    """`evaluate_task` for each task; predictions go to `predictions_dir/<task>.jsonl` when given."""
    results = []
    for task in tasks:
        path = Path(predictions_dir) / f"{task.name}.jsonl" if predictions_dir is not None else None
        results.append(evaluate_task(model, tokenizer, task, predictions_path=path, **kwargs))
    return results


def results_to_json(results: Sequence[TaskResult]) -> dict[str, Any]:
    """A JSON-ready summary keyed by task name (for the CLI's `--json`): every TaskResult field."""
    return {"tasks": {r.task: asdict(r) for r in results}}


def draw_demos(task: TaskSpec, examples: Sequence[Example], shots: int, seed: int) -> list[list[Example]]:
    """k-shot demonstrations per example, always from the task's TRAIN split (never the test split)."""
    if shots <= 0:
        return [[] for _ in examples]
    pool = load_examples(task, "train")
    return [sample_demos(pool, shots, seed, exclude_id=ex.id) for ex in examples]


@contextlib.contextmanager
def _inference(model, precision: Precision | None) -> Iterator[None]:
    """Eval mode, no autograd, and autocast when `precision` asks for it; the model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
            if precision is not None and precision.autocast:
                stack.enter_context(torch.autocast(precision.device.type, dtype=precision.compute_dtype))
            yield
    finally:
        model.train(was_training)


def _run_scoring(
    model, tokenizer, task, metric: Metric, examples, demos, batch_size, compile
) -> tuple[list[dict], list[float], dict]:
    """Log-likelihood of every option; the prediction is the option with the highest summed log-prob."""
    scored = score_examples(model, tokenizer, task, examples, demos, batch_size=batch_size, compile=compile)
    records, scores, norm_hits = [], [], []
    for ex, d, s in zip(examples, demos, scored, strict=True):
        score = metric.score(ex.options[s.predicted], ex, task)
        scores.append(score)
        norm_hits.append(float(s.predicted_norm == ex.gold))
        records.append(_option_record(task, tokenizer, ex, d, s, score))
    return records, scores, {"acc_norm": sum(norm_hits) / len(norm_hits)}


def _label(task: TaskSpec, index: int, ex: Example) -> str:
    """Classification: the label text; multiple choice (options differ per example): the letter."""
    return ex.options[index] if task.type == "classification" else chr(ord("A") + index)


def _option_record(task, tokenizer, ex: Example, demos, s: ScoredExample, score: float) -> dict[str, Any]:
    return {
        "id": ex.id,
        "prompt": render_context(task, tokenizer, ex, demos),
        "demo_ids": [d.id for d in demos],
        "gold": ex.options[ex.gold],
        "prediction": ex.options[s.predicted],
        "prediction_norm": ex.options[s.predicted_norm],
        "gold_index": ex.gold,
        "prediction_index": s.predicted,
        "correct": score,
        "options": list(ex.options),
        "option_scores": [
            {"logprob": lp, "n_tokens": nt, "n_bytes": nb, "is_greedy": g}
            for lp, nt, nb, g in zip(s.logprobs, s.n_tokens, s.n_bytes, s.is_greedy, strict=True)
        ],
    }


def _run_generation(
    model, tokenizer, task, metric: Metric, examples, demos, batch_size, compile
) -> tuple[list[dict], list[float], dict]:
    """Greedy answers scored by the task's metric (`compile` is not used: generation runs eager)."""
    prompts, gens = generate_for_task(model, tokenizer, task, examples, demos, batch_size=batch_size)
    records, scores = [], []
    for ex, d, prompt, gen in zip(examples, demos, prompts, gens, strict=True):
        score = metric.score(gen.text, ex, task)
        scores.append(score)
        records.append(
            {
                "id": ex.id,
                "prompt": prompt,
                "demo_ids": [x.id for x in d],
                "gold": metric.gold_of(ex, task),
                "prediction": gen.text,
                "extracted": extract_answer(gen.text, task.extract),
                "score": score,
                "stop_reason": gen.stop_reason,
                "n_tokens": len(gen.token_ids),
            }
        )
    n = len(gens)
    extra = {
        "mean_new_tokens": sum(len(g.token_ids) for g in gens) / n,
        "hit_max_new_tokens": sum(g.stop_reason == "length" for g in gens) / n,
    }
    return records, scores, extra


# one runner per request kind (metrics.REQUEST_KIND): records, per-example scores, extra statistics
_RUNNERS = {"loglikelihood": _run_scoring, "generation": _run_generation}


def write_jsonl_atomic(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Write all records or nothing (temp file in the same folder, then `os.replace`)."""
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records))
