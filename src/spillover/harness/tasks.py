"""lm-evaluation-harness tasks as spillover targets: `lm_eval:TASK`.

lm-eval does everything that defines the task: `TaskManager` finds its YAML (in the `lm_eval_include`
folders first, then lm-eval's own task folder), the task loads its documents and renders prompts,
few-shot blocks and targets into `Instance` requests (`build_all_requests`), and after spillover's
scorer has answered them (`backend.SpilloverLM`: log-likelihood rows and greedy generations) the task's
own filters (`apply_filters`), per-document metrics (`process_results`) and aggregations score them, as
`lm_eval.evaluate` does. The result is an ordinary `TaskResult` named `lm_eval:TASK` whose metric is
lm-eval's (`acc`, or `exact_match,strict-match` for a filter other than `none`, lm-eval's own key): the
first metric of its metric_list under the first filter of its filter_list is the target's metric
(`own_key`), every other one is reported beside it. Each
document's metric values go to the predictions file, so paired comparisons work on these rows too.

Settings as lm-eval's CLI applies them: `shots` > 0 is `--num_fewshot` (a task whose config says 0 keeps
0), few-shot examples are drawn with lm-eval's default seed 1234 (+ `seed`), `limit` is `--limit`.
"""

from __future__ import annotations

import difflib
import functools
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spillover.errors import SpilloverError

log = logging.getLogger(__name__)

PREFIX = "lm_eval:"
FEWSHOT_SEED = 1234  # lm-eval's default few-shot seed (lm_eval.defaults.DEFAULT_OTHER_SEED)
N_BOOT = 1000


@dataclass(frozen=True)
class LmEvalTarget:
    """An lm-eval task by name, found in `include` folders or lm-eval's own task folder."""

    task: str
    include: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return PREFIX + self.task

    # What a study reads of a task, answered from lm-eval's own task config (`task_info`): an lm-eval task
    # is a target only, so it has no train split, no labels spillover knows, and no task_type or domain.
    train = None
    labels = None
    task_type = None
    domain = None

    @property
    def test(self) -> str:
        return self.name  # not a file: lm-eval reads its own documents

    @property
    def type(self) -> str:
        """spillover's name for lm-eval's output_type (`generate_until` -> generation, ...)."""
        return OUTPUT_TYPES.get(task_info(self).output_type, task_info(self).output_type)

    @property
    def metric(self) -> str:
        """The metric `evaluate_target` reports as the target's own (`TaskInfo.metric`)."""
        return task_info(self).metric


OUTPUT_TYPES = {"generate_until": "generation", "loglikelihood_rolling": "perplexity"}


@dataclass(frozen=True)
class TaskInfo:
    """What a study needs to know of an lm-eval task before it is evaluated."""

    output_type: str
    metric: str  # the own metric: lm-eval's first aggregated metric under its first filter (`own_key`)
    config: dict[str, Any]  # lm-eval's task config (`TaskConfig.to_dict`), for the study's fingerprint


def task_info(target: LmEvalTarget) -> TaskInfo:
    """The target's `TaskInfo`, built once per state of its include folders' YAML files."""
    return _task_info(target, _yaml_stamp(target.include))


def _yaml_stamp(folders: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    return tuple(
        (str(path), path.stat().st_mtime_ns)
        for folder in folders
        for path in sorted(Path(folder).rglob("*"))
        if path.suffix in (".yaml", ".yml")
    )


@functools.cache
def _task_info(target: LmEvalTarget, stamp) -> TaskInfo:
    task = build_task(target)
    metric, filter_name = own_key(task)
    return TaskInfo(task.OUTPUT_TYPE, metric_name(metric, filter_name), task.config.to_dict())


def own_key(task) -> tuple[str, str]:
    """(metric, filter) of a task's own metric: the first metric lm-eval aggregates (its metric_list's
    order) under the first filter it applies (its filter_list's order; `none` without one)."""
    filters = task.config.filter_list or [{"name": "none"}]
    return next(iter(task.aggregation())), filters[0]["name"]


def is_lm_eval_name(name: str) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def require_lm_eval() -> None:
    """An error naming the extra to install when lm-evaluation-harness is missing."""
    import importlib.util

    if importlib.util.find_spec("lm_eval") is None:
        raise SpilloverError(
            "lm_eval: targets need lm-evaluation-harness, which is not installed: "
            "pip install 'spillover[lm-eval]'"
        )


def check_include(include: Iterable[str | Path]) -> tuple[str, ...]:
    """Every `lm_eval_include` entry is an existing folder; returned resolved, in order."""
    out = []
    for entry in include:
        path = Path(entry).expanduser()
        if not path.is_dir():
            raise SpilloverError(f"lm_eval_include: {entry}: not a folder of lm-eval task YAML files")
        out.append(str(path.resolve()))
    return tuple(out)


def resolve_targets(names: Sequence[str], include: Sequence[str | Path] = ()) -> dict[str, LmEvalTarget]:
    """`lm_eval:TASK` names -> targets; each TASK must be one lm-eval task (not a group or tag) in the
    include folders or lm-eval's task folder. Indexes lm-eval's own tasks (~10 s) only when needed."""
    require_lm_eval()
    folders = check_include(include)
    targets = {}
    for name in names:
        task = name[len(PREFIX) :]
        if not task or "/" in task:
            raise SpilloverError(f"target '{name}': write an lm-eval task as lm_eval:TASK_NAME")
        _find(task, folders)
        targets[name] = LmEvalTarget(task, folders)
    return targets


def _find(task: str, folders: tuple[str, ...]) -> None:
    """Raise unless `task` names one task in the folders (then lm-eval's own tasks)."""
    for defaults in (False, True):
        if defaults is False and not folders:
            continue
        manager = task_manager(folders, defaults)
        if task in manager.all_subtasks:
            return
        if task in manager.all_groups or task in manager.all_tags:
            raise SpilloverError(
                f"lm-eval task '{task}' is a group or tag of several tasks; name one of its tasks "
                f"(`lm_eval ls tasks` lists them)"
            )
    where = [*folders, f"lm-eval {_lm_eval_version()}'s task folder"]
    close = difflib.get_close_matches(task, manager.all_subtasks, n=1)
    hint = f"; did you mean 'lm_eval:{close[0]}'?" if close else ""
    raise SpilloverError(
        f"unknown lm-eval task '{task}'{hint} looked in: {', '.join(where)} "
        "(add folders of task YAMLs with --lm-eval-include / lm_eval_include:)"
    )


def task_manager(folders: tuple[str, ...], defaults: bool):
    """lm-eval's task index over `folders` (and its own task folder with `defaults`). The user's folders
    are indexed afresh each time (small, and an edited YAML must be seen); lm-eval's own ~15,000 task
    YAMLs (~10 s) once per process."""
    from lm_eval.tasks import TaskManager

    if defaults:
        return _default_task_manager(folders)
    return TaskManager(include_path=list(folders) or None, include_defaults=False)


@functools.cache
def _default_task_manager(folders: tuple[str, ...]):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(folders) or None, include_defaults=True)


def _lm_eval_version() -> str:
    import lm_eval

    return lm_eval.__version__


def build_task(target: LmEvalTarget, shots: int = 0, seed: int = 0):
    """lm-eval's Task object (its documents loaded), few-shot settings applied as lm-eval's CLI does."""
    manager = task_manager(target.include, not _in_folders(target))
    try:
        task = manager.load([target.task])["tasks"][target.task]
    except Exception as e:  # lm-eval and datasets raise many types on a bad YAML or data file
        raise SpilloverError(
            f"lm-eval task '{target.task}' could not be built: {type(e).__name__}: {e}"
        ) from e
    default = task.get_config("num_fewshot")
    if shots > 0 and default != 0:  # a config that says 0 keeps 0, as with `lm_eval --num_fewshot`
        task.set_config(key="num_fewshot", value=shots)
    elif default is None:
        task.set_config(key="num_fewshot", value=0)
    task.set_fewshot_seed(seed=FEWSHOT_SEED + seed)
    return task


def _in_folders(target: LmEvalTarget) -> bool:
    return bool(target.include) and target.task in task_manager(target.include, False).all_subtasks


def fingerprint(target: LmEvalTarget) -> dict[str, Any]:
    """What a study's results on `target` depend on besides the model: lm-eval's version, the task's
    config (prompts, filters, metrics, few-shot settings) and its evaluation documents (all of them)."""
    task = build_task(target)
    spec = {"lm_eval": _lm_eval_version(), "task": target.task, "config": task_info(target).config}
    return {"spec": spec, "test": list(task.eval_docs)}


def target_examples(target: LmEvalTarget, limit: int | None = None) -> list:
    """The task's first `limit` evaluation documents as spillover `Example`s (for dataset statistics): the
    prompt lm-eval renders without few-shot examples, and the gold answer (a multiple-choice task's gold
    choice, with its choices as `options`; the first of several golds)."""
    from spillover.data.tasks import Example

    task = build_task(target)
    examples = []
    for doc_id, doc in task.doc_iterator(limit=limit):
        gold = task.doc_to_target(doc)
        gold = gold[0] if isinstance(gold, list) and gold else gold
        options, index = None, None
        if task.OUTPUT_TYPE == "multiple_choice":
            options = tuple(str(c) for c in task.doc_to_choice(doc))
            index = (
                gold if isinstance(gold, int) else options.index(str(gold)) if str(gold) in options else None
            )
            gold = options[index] if index is not None else gold
        text = task.doc_to_text(doc)
        examples.append(Example(str(doc_id), str(text), str(gold), dict(doc), options, index))
    return examples


def check_target(target: LmEvalTarget, limit: int | None, shots: int) -> None:
    """Build the task and its requests (data, prompts, few-shot examples) before a model is loaded."""
    task = build_task(target, shots)
    try:
        task.build_all_requests(limit=limit)
    except Exception as e:
        raise SpilloverError(f"lm-eval task '{target.task}': its requests could not be built: {e}") from e
    if not task.instances:
        raise SpilloverError(f"lm-eval task '{target.task}' has no documents to evaluate")


def evaluate_target(
    model,
    tokenizer,
    target: LmEvalTarget,
    *,
    limit: int | None = None,
    shots: int = 0,
    seed: int = 0,
    batch_size: int = 16,
    precision=None,
    predictions_path: str | Path | None = None,
    compile: Any = "auto",
):
    """Evaluate `model` on an lm-eval task (see the module docstring); a `TaskResult`."""
    from spillover.evaluation.evaluate import TaskResult, write_jsonl_atomic
    from spillover.harness.backend import SpilloverLM
    from spillover.models.compile import wants_compile

    task = build_task(target, shots, seed)
    task.build_all_requests(limit=limit)
    lm = SpilloverLM.from_model(model, tokenizer, precision, batch_size, wants_compile(compile))
    start = time.perf_counter()
    answer_requests(lm, task.instances)
    seconds = time.perf_counter() - start
    rows, metrics = score_documents(task, limit)
    first = own_key(task)
    keys = [first, *(k for k in metrics if k != first)]
    own, *beside = (metric_summary(task, key, metrics[key], seed) for key in keys)
    if predictions_path is not None:
        write_jsonl_atomic(Path(predictions_path), rows)
    result = TaskResult(
        task=target.name,
        metric=own.metric,
        value=own.value,
        n=len(rows),
        ci_low=own.ci_low,
        ci_high=own.ci_high,
        higher_is_better=own.higher_is_better,
        shots=int(task.get_config("num_fewshot") or 0),
        seed=seed,
        extra={"seconds": round(seconds, 3)},
        predictions_path=str(predictions_path) if predictions_path is not None else None,
        beside=beside,
    )
    log.info(
        "%s: %s = %.4f on %d documents in %.1fs", result.task, result.metric, result.value, result.n, seconds
    )
    return result


def answer_requests(lm, instances) -> None:
    """Every instance's response from `lm`, by request type (`lm_eval.evaluate`'s loop, one process)."""
    by_type = defaultdict(list)
    for instance in instances:
        by_type[instance.request_type].extend([instance] * instance.repeats)
    for request_type, requests in by_type.items():
        for instance, response in zip(requests, getattr(lm, request_type)(requests), strict=True):
            instance.resps.append(response)


def score_documents(task, limit: int | None) -> tuple[list[dict], dict[tuple[str, str], list]]:
    """lm-eval's filters and per-document metrics: one prediction record per document, and per
    (metric, filter) the documents' metric values in document order."""
    task.apply_filters()
    by_doc = defaultdict(list)
    for instance in task.instances:
        by_doc[instance.doc_id].append(instance)
    filters = list(task.instances[0].filtered_resps)
    metrics: dict[tuple[str, str], list] = {}
    rows = []
    for doc_id, doc in task.doc_iterator(limit=limit):
        requests = sorted(by_doc[doc_id], key=lambda r: r.idx)
        per_filter = {f: task.process_results(doc, [r.filtered_resps[f] for r in requests]) for f in filters}
        for f, values in per_filter.items():
            for metric, value in values.items():
                metrics.setdefault((metric, f), []).append(value)
        rows.append(_record(task, doc_id, doc, requests, per_filter))
    return rows, metrics


def _record(task, doc_id: int, doc, requests, per_filter: dict[str, dict]) -> dict[str, Any]:
    """One document's prediction record (the predictions JSONL): `score` is its value of the task's own
    metric (`own_key`), what paired comparisons compare; `prediction` is under the own metric's filter."""
    values = {metric_name(m, f): v for f, ms in per_filter.items() for m, v in ms.items()}
    own, first = own_key(task)
    record = {
        "id": str(doc_id),
        "prompt": requests[0].args[0],
        "gold": _jsonable(task.doc_to_target(doc)),
        "score": _jsonable(per_filter[first][own]),
        "metrics": {k: _jsonable(v) for k, v in values.items()},
    }
    if task.OUTPUT_TYPE == "multiple_choice":
        choices = [r.args[1] for r in requests]
        logprobs = [r.filtered_resps[first][0] for r in requests]
        best = int(np.argmax(logprobs))
        record |= {
            "prediction": choices[best].strip(),
            "prediction_index": best,
            "options": choices,
            "option_scores": [
                {"logprob": float(lp), "is_greedy": bool(r.filtered_resps[first][1])}
                for lp, r in zip(logprobs, requests, strict=True)
            ],
        }
    else:
        record["prediction"] = _jsonable(requests[0].filtered_resps[first])
    return record


def metric_name(metric: str, filter_name: str) -> str:
    """lm-eval's metric under a filter: `acc` for the `none` filter, else lm-eval's `metric,filter` key."""
    return metric if filter_name == "none" else f"{metric},{filter_name}"


def metric_summary(task, key: tuple[str, str], per_doc: list, seed: int):
    """`MetricValue` of one (metric, filter): lm-eval's aggregation of the documents' values, and a
    percentile-bootstrap interval of that aggregation (documents resampled, seeded)."""
    from lm_eval.api.metrics import mean

    from spillover.evaluation.evaluate import MetricValue
    from spillover.evaluation.metrics import bootstrap_ci

    metric, filter_name = key
    aggregate = task.aggregation()[metric]
    value = float(aggregate(list(per_doc)))
    if aggregate is mean:
        low, high = bootstrap_ci([float(v) for v in per_doc], n_boot=N_BOOT, seed=seed)
    else:  # lm-eval's other aggregations (f1, mcc, bleu, ...) take the documents' raw values
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, len(per_doc), size=(N_BOOT, len(per_doc)))
        stats = [float(aggregate([per_doc[i] for i in idx])) for idx in draws]
        low, high = (float(x) for x in np.percentile(stats, [2.5, 97.5]))
    better = bool(task.higher_is_better().get(metric, True))
    return MetricValue(metric_name(metric, filter_name), value, low, high, better)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value
