"""`spillover predict`: a new source's transfer row from a finished transfer study, without fine-tuning on
the source, and the leave-one-source-out check of that prediction (issue 26; the arithmetic is in
`analysis.prediction`).

The signals, for a source and each of the study's targets:
- dataset statistics (methods.md §1.4) of the source's training rows, computed exactly as the study's
  `stats` jobs compute them (same limit, sample, embedder and parser), against each measured source's and
  each target's statistics from the study's store;
- gradient alignment at the base model: the cosine between the source's and the target's mean LoRA
  gradient (`training.gradients.mean_gradient`; a fresh adapter of the study's LoRA shape, seeded as the
  study's training), over the first `grad_examples` training rows of each (a target without a train split
  uses its first test rows; an lm-eval target has no gradient feature). Vectors are cached in
  `STUDY_DIR/prediction/gradients/` by a hash of everything they depend on.

Costs: the seconds each signal took for a source, against the source's fine-tune (`train_result.json`'s
seconds in the study); a target's gradient is shared by every source and not counted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from spillover.analysis.prediction import (
    COMBINED,
    GRADIENT,
    GRADIENT_FEATURE,
    METHODS,
    SourceFeatures,
    Study,
    evaluate_loso,
    predicted_table,
)
from spillover.atomic import atomic_write_text
from spillover.data.collate import pad_id
from spillover.data.sft import build_sequences
from spillover.data.stats import DatasetStats, dataset_stats, pair_similarities
from spillover.data.tasks import TaskSpec
from spillover.engine.store import Store
from spillover.errors import SpilloverError
from spillover.studies.context import StudyContext
from spillover.studies.specs import SourceSpec

log = logging.getLogger(__name__)

PREDICTION = "prediction"
GRAD_EXAMPLES = 32


@dataclass
class Finished:
    """What a finished transfer study holds for prediction."""

    root: Path
    ctx: StudyContext
    sources: list[SourceSpec]
    targets: list[str]
    delta: pd.DataFrame  # sources × targets
    q: pd.DataFrame
    source_stats: dict[str, DatasetStats]
    target_stats: dict[str, DatasetStats]
    stats_seconds: dict[str, float]  # source label -> its stats job's seconds
    train_seconds: dict[str, float]  # source label -> its fine-tune's seconds


def load_finished(study_dir: str | Path) -> Finished:
    """Read a finished transfer study: its spec, the paired Δ table, statistics and timings."""
    from spillover.studies.run import _saved_study, prepare

    root = Path(study_dir)
    kind, spec = _saved_study(root)
    if kind.name != "transfer":
        raise SpilloverError(f"{root}: prediction needs a transfer study; this one is a {kind.name} study")
    table = root / "tables" / "delta_stats.csv"
    if not table.exists():
        raise SpilloverError(
            f"{root}: no tables/delta_stats.csv yet; finish the study (`spillover run`) first"
        )
    cells = pd.read_csv(table)
    delta = cells.pivot(index="source", columns="target", values="delta")
    q = cells.pivot(index="source", columns="target", values="q")
    tasks, plan = prepare(kind, spec)
    store = Store(root)
    done = {j["id"]: j for j in store.jobs() if j["status"] == "done"}
    source_stats, target_stats, stats_seconds, train_seconds = {}, {}, {}, {}
    train_ids = {}
    for job in plan:
        rec = done.get(job.id)
        if rec is None:
            continue
        if job.kind == "stats":
            stats = DatasetStats.from_dict(store.result(job.id))
            if job.params.role == "source":
                source_stats[job.params.label] = stats
                stats_seconds[job.params.label] = rec["finished"] - rec["started"]
            else:
                target_stats[job.params.label] = stats
        elif job.kind == "train":
            train_ids[job.id] = store.result(job.id).get("seconds")
    for job in plan.by_kind("eval"):  # a source's train job is its evals' dependency
        if job.deps and job.deps[0] in train_ids and train_ids[job.deps[0]]:
            train_seconds.setdefault(job.params.label, float(train_ids[job.deps[0]]))
    sources = [s for s in spec.sources if s.name in delta.index]
    targets = [t for t in spec.targets if t in delta.columns]
    ctx = StudyContext(spec, tasks, store)
    rows = [s.name for s in sources]
    return Finished(
        root,
        ctx,
        sources,
        targets,
        delta.loc[rows, targets],
        q.loc[rows, targets],
        source_stats,
        target_stats,
        stats_seconds,
        train_seconds,
    )


def _grad_key(f: Finished, task: str, split: str, transforms: list[dict], n: int) -> str:
    spec = f.ctx.spec
    payload = {
        "model": spec.model,
        "precision": spec.precision,
        "task": f.ctx.tasks[task].model_dump(mode="json"),
        "split": split,
        "transforms": transforms,
        "n": n,
        "lora": spec.train.lora.model_dump(mode="json"),
        "max_len": spec.train.max_len,
        "shots": spec.train.shots,
        "seed": spec.train.seed,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Gradients:
    """Mean LoRA gradients at the study's base model, one fresh adapter for all of them (made on first
    use, unloaded when the block ends), cached on disk."""

    def __init__(self, f: Finished, n_examples: int) -> None:
        self.f, self.n = f, n_examples
        self.folder = f.root / PREDICTION / "gradients"
        self._stack = contextlib.ExitStack()
        self._model = None

    def __enter__(self) -> Gradients:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
        self._model = None

    def _peft(self):
        if self._model is None:
            train = self.f.ctx.spec.train
            self._model = self._stack.enter_context(self.f.ctx.fresh_lora(train.lora, train.seed))
        return self._model

    def of(self, task: str, transforms: list[dict] = ()) -> tuple[torch.Tensor | None, float]:
        """(mean gradient, seconds it took when it was computed: a cached vector keeps its cost). None for
        an lm-eval target, which has no training text of its own."""
        from spillover.training.gradients import mean_gradient

        spec: TaskSpec = self.f.ctx.tasks[task]
        if not isinstance(spec, TaskSpec):
            return None, 0.0  # an lm-eval target: no training text of its own
        split = "train" if spec.train is not None else "test"
        key = _grad_key(self.f, task, split, list(transforms), self.n)
        path = self.folder / f"{key}.pt"
        if path.exists():
            return torch.load(path), json.loads(path.with_suffix(".json").read_text())["seconds"]
        start = time.perf_counter()
        examples = self.f.ctx.examples(task, split, self.n, list(transforms))
        settings = self.f.ctx.spec.train
        seqs = build_sequences(
            spec, self.f.ctx.tokenizer, examples, settings.max_len, settings.shots, settings.seed
        )
        model = self._peft()
        grad = mean_gradient(model, seqs, pad_id(self.f.ctx.tokenizer), self.f.ctx.precision)
        seconds = time.perf_counter() - start
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path.with_suffix(".json"), json.dumps({"task": task, "seconds": seconds}))
        tmp = path.with_suffix(".tmp")
        torch.save(grad, tmp)
        tmp.replace(path)  # last: a vector on disk always has its cost beside it
        return grad, seconds


def _source_features(
    f: Finished,
    label: str,
    task: str,
    stats: DatasetStats,
    grads: Gradients | None,
    target_grads: dict[str, torch.Tensor | None],
    transforms: list[dict],
    stats_seconds: float,
) -> SourceFeatures:
    from spillover.training.gradients import cosine

    to_sources: dict[str, dict[str, float]] = {}
    for other, o_stats in f.source_stats.items():
        if other == label:
            continue
        for m, v in pair_similarities(stats, o_stats).items():
            if v is not None:
                to_sources.setdefault(m, {})[other] = float(v)
    to_targets: dict[str, dict[str, float]] = {}
    for t in f.targets:
        for m, v in pair_similarities(stats, f.target_stats[t]).items():
            if v is not None:
                to_targets.setdefault(m, {})[t] = float(v)
    cost = {"stats": stats_seconds}
    if grads is not None:
        g, seconds = grads.of(task, transforms)
        cost["gradient"] = seconds
        if g is not None:
            to_targets[GRADIENT_FEATURE] = {
                t: cosine(g, tg) for t, tg in target_grads.items() if tg is not None
            }
    spec = f.ctx.tasks[task]
    return SourceFeatures(
        task_type=spec.task_type or spec.type,
        to_sources=to_sources,
        to_targets=to_targets,
        cost_seconds=cost,
        train_seconds=f.train_seconds.get(label),
    )


def _target_gradients(f: Finished, grads: Gradients | None) -> dict[str, torch.Tensor | None]:
    return {t: grads.of(t)[0] for t in f.targets} if grads is not None else {}


def study_features(f: Finished, grad_examples: int | None) -> Study:
    """The measured sources' features (gradients computed or read from the cache)."""
    with Gradients(f, grad_examples) if grad_examples else contextlib.nullcontext() as grads:
        target_grads = _target_gradients(f, grads)
        features = {
            s.name: _source_features(
                f,
                s.name,
                s.task,
                f.source_stats[s.name],
                grads,
                target_grads,
                s.transforms,
                f.stats_seconds.get(s.name, 0.0),
            )
            for s in f.sources
        }
    return Study(delta=f.delta, q=f.q, features=features)


def evaluate(study_dir: str | Path, grad_examples: int | None = GRAD_EXAMPLES) -> Path:
    """Leave-one-source-out over a finished transfer study → `tables/prediction_eval.csv`."""
    f = load_finished(study_dir)
    methods = METHODS if grad_examples else tuple(m for m in METHODS if m != GRADIENT)
    table = evaluate_loso(study_features(f, grad_examples), methods)
    out = f.root / "tables" / "prediction_eval.csv"
    atomic_write_text(out, table.to_csv(index=False))
    return out


def predict(
    study_dir: str | Path,
    source: SourceSpec,
    out: str | Path | None = None,
    method: str = COMBINED,
    grad_examples: int | None = GRAD_EXAMPLES,
) -> Path:
    """The new source's predicted row → `predicted_delta.csv` (default: STUDY_DIR/prediction/<label>/)."""
    f = load_finished(study_dir)
    if source.task not in f.ctx.tasks:
        _add_task(f, source.task)
    if source.name in f.delta.index:
        raise SpilloverError(
            f"source '{source.name}' is already measured in {f.root}; its row is tables/delta_stats.csv"
        )
    study = study_features(f, grad_examples)
    start = time.perf_counter()
    stats = _stats(f, source)
    stats_seconds = time.perf_counter() - start
    with Gradients(f, grad_examples) if grad_examples else contextlib.nullcontext() as grads:
        new = _source_features(
            f,
            source.name,
            source.task,
            stats,
            grads,
            _target_gradients(f, grads),
            source.transforms,
            stats_seconds,
        )
    table = predicted_table(study, source.name, new, method)
    folder = Path(out) if out else f.root / PREDICTION / source.name
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "predicted_delta.csv", table.to_csv(index=False))
    cost = {k: round(v, 3) for k, v in new.cost_seconds.items()}
    atomic_write_text(folder / "cost.json", json.dumps(_cost(f, cost), indent=2))
    return folder / "predicted_delta.csv"


def _cost(f: Finished, seconds: dict[str, float]) -> dict[str, Any]:
    trains = list(f.train_seconds.values())
    mean_train = sum(trains) / len(trains) if trains else None
    total = sum(seconds.values())
    return {
        "seconds": seconds,
        "total_seconds": round(total, 3),
        "mean_fine_tune_seconds_in_study": mean_train,
        "fraction_of_a_fine_tune": total / mean_train if mean_train else None,
    }


def _stats(f: Finished, source: SourceSpec) -> DatasetStats:
    spec = f.ctx.spec
    examples = f.ctx.examples(source.task, "train", spec.train.limit, source.transforms)
    return dataset_stats(
        examples,
        f.ctx.tokenizer,
        f.ctx.tasks[source.task].labels,
        embedder=f.ctx.embedder(),
        parser=f.ctx.parser(),
        max_sample=spec.stats.sample,
        seed=spec.seed,
    )


def _add_task(f: Finished, task: str) -> None:
    from spillover.data.tasks import resolve_tasks

    (spec,) = resolve_tasks([task], f.ctx.spec.tasks_file, [])
    if isinstance(spec, TaskSpec) and spec.train is None:
        raise SpilloverError(f"source '{task}' has no train split (set `train:` in its task spec)")
    f.ctx.tasks[task] = spec
