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
  uses its first test rows; an lm-eval target has no gradient feature);
- a short probe: 5% of the source's fine-tune (its optimiser steps, at least one) with the study's own
  training settings, then the loss of each target's first rows against the base model's.
Everything is cached in `STUDY_DIR/prediction/` by a hash of what it depends on (`Signals`).

Costs: the seconds each signal took for a source, against the source's fine-tune (`train_result.json`'s
seconds in the study); what every source shares (a target's gradient, the base model's target losses) is
not counted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
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
    PROBE,
    PROBE_FEATURE,
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
from spillover.harness.tasks import is_lm_eval_name
from spillover.studies.context import StudyContext
from spillover.studies.specs import SourceSpec
from spillover.studies.transfer.analysis import PREDICTION, PREDICTION_EVAL
from spillover.training.checkpoint import CHECKPOINTS

log = logging.getLogger(__name__)

GRAD_EXAMPLES = 32  # rows per task for the mean gradient
PROBE_FRACTION = 0.05  # the short probe's share of the source's full run (optimiser steps)
PROBE_ROWS = 16  # rows per target whose loss the probe reads


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
    train_seconds: dict[str, float]  # source label -> its fine-tune's seconds (mean over training seeds)


def load_finished(study_dir: str | Path) -> Finished:
    """Read a finished transfer study: its spec, the paired Δ table, statistics and timings."""
    from spillover.studies.run import prepare, saved_study

    root = Path(study_dir)
    kind, spec = saved_study(root)
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
    source_stats, target_stats, stats_seconds = {}, {}, {}
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
    per_seed: dict[str, dict[str, float]] = {}  # label -> {train job id: seconds}, one per training seed
    for job in plan.by_kind("eval"):  # a source's train job is its evals' dependency
        if job.deps and train_ids.get(job.deps[0]):
            per_seed.setdefault(job.params.label, {})[job.deps[0]] = float(train_ids[job.deps[0]])
    train_seconds = {label: sum(s.values()) / len(s) for label, s in per_seed.items()}
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


def _task_json(f: Finished, task: str) -> Any:
    spec = f.ctx.tasks[task]
    return spec.model_dump(mode="json") if isinstance(spec, TaskSpec) else task


def _data_key(
    f: Finished, task: str | None, split: str, transforms: list[dict], targets: bool = False, **extra: Any
) -> str:
    """A hash of everything a signal computed on a task's rows depends on (model, task spec, rows,
    training settings; with `targets`, every target's spec; the signal's own settings in `extra`)."""
    spec = f.ctx.spec
    payload = {
        "model": spec.model,
        "precision": spec.precision,
        "task": _task_json(f, task) if task else None,
        "split": split,
        "transforms": transforms,
        "train": spec.train.model_dump(mode="json"),
        "targets": [_task_json(f, t) for t in f.targets] if targets else None,
        **extra,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _rows(f: Finished, task: str) -> tuple[TaskSpec | None, str]:
    """A task's spec and the split its signal rows come from (train, else test); None for an lm-eval
    target, which has no training text of its own."""
    spec = f.ctx.tasks[task]
    if not isinstance(spec, TaskSpec):
        return None, ""
    return spec, "train" if spec.train is not None else "test"


def _sequences(f: Finished, spec: TaskSpec, split: str, limit: int | None, transforms: list[dict] = ()):
    settings = f.ctx.spec.train
    examples = f.ctx.examples(spec.name, split, limit, list(transforms))
    return build_sequences(spec, f.ctx.tokenizer, examples, settings.max_len, settings.shots, settings.seed)


def _cached(path: Path, compute) -> dict[str, Any]:
    """The JSON record at `path`, computing and writing it first when absent (atomically)."""
    if path.exists():
        return json.loads(path.read_text())
    record = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record))
    return record


class Signals:
    """The model-based signals of issue 26 for any source of a finished study, cached in
    `STUDY_DIR/prediction/` (a cached record keeps the seconds it took, so costs survive the cache).

    - gradients (`grad_examples` rows; None = off): the mean gradient of the target-token loss w.r.t. a
      fresh LoRA adapter of the study's shape, seeded as its training (`training.gradients`); features are
      cosines between a source's and each target's vector.
    - the short probe (`probe_fraction` of the source's full run, at least one optimiser step; None = off):
      the study's own training settings for those steps, then the loss of each target's first
      `probe_rows` rows; the feature is the base model's loss minus the probe's (positive = helps)."""

    def __init__(
        self,
        f: Finished,
        grad_examples: int | None,
        probe_fraction: float | None,
        probe_rows: int = PROBE_ROWS,
    ) -> None:
        self.f, self.grad_examples, self.probe_fraction, self.probe_rows = (
            f,
            grad_examples,
            probe_fraction,
            probe_rows,
        )
        if probe_fraction is not None and not 0 < probe_fraction <= 1:
            raise SpilloverError(
                f"the probe fraction must be in (0, 1] (a share of the fine-tune); got {probe_fraction}"
            )
        self.root = f.root / PREDICTION
        self._target_grads: dict[str, torch.Tensor | None] | None = None
        self._target_rows: dict[str, list] = {}
        self._base_losses: dict[str, float] | None = None

    # gradients

    def _gradient(self, task: str, transforms: list[dict] = ()) -> tuple[torch.Tensor | None, float]:
        from spillover.training.gradients import mean_gradient

        spec, split = _rows(self.f, task)
        if spec is None:
            return None, 0.0
        key = _data_key(self.f, task, split, list(transforms), n=self.grad_examples, signal="gradient")
        path = self.root / "gradients" / f"{key}.pt"
        if path.exists():
            return torch.load(path), json.loads(path.with_suffix(".json").read_text())["seconds"]
        start = time.perf_counter()
        seqs = _sequences(self.f, spec, split, self.grad_examples, transforms)
        train = self.f.ctx.spec.train
        # a fresh adapter per vector (seeded: the same projection every time), unloaded at once, so the
        # shared base is plain again for the probe's training and for evaluation
        with self.f.ctx.fresh_lora(train.lora, train.seed) as model:
            grad = mean_gradient(model, seqs, pad_id(self.f.ctx.tokenizer), self.f.ctx.precision)
        seconds = time.perf_counter() - start
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path.with_suffix(".json"), json.dumps({"task": task, "seconds": seconds}))
        tmp = path.with_suffix(".tmp")
        torch.save(grad, tmp)
        tmp.replace(path)  # last: a vector on disk always has its cost beside it
        return grad, seconds

    def gradient_cosines(self, task: str, transforms: list[dict]) -> tuple[dict[str, float], float]:
        """({target: cosine of the source's and the target's gradient}, the source's seconds)."""
        from spillover.training.gradients import cosine

        if self._target_grads is None:
            self._target_grads = {t: self._gradient(t)[0] for t in self.f.targets}
        g, seconds = self._gradient(task, transforms)
        if g is None:
            return {}, seconds
        return {t: cosine(g, tg) for t, tg in self._target_grads.items() if tg is not None}, seconds

    # the short probe

    def _target_sequences(self, target: str):
        if target not in self._target_rows:
            spec, split = _rows(self.f, target)
            self._target_rows[target] = (
                _sequences(self.f, spec, split, self.probe_rows) if spec is not None else []
            )
        return self._target_rows[target]

    def _losses(self, model) -> dict[str, float]:
        from spillover.evaluation.checkpoint_eval import validation_loss

        out = {}
        for t in self.f.targets:
            seqs = self._target_sequences(t)
            if seqs:
                batch = self.f.ctx.spec.eval.batch_size
                loss = validation_loss(model, self.f.ctx.tokenizer, seqs, batch, self.f.ctx.precision)
                out[t] = loss["val_loss"]
        return out

    def probe_gains(self, task: str, transforms: list[dict]) -> tuple[dict[str, float], float]:
        """({target: base loss − probe loss}, the source's seconds: the probe's training and losses)."""
        from spillover.training.loop import default_plan
        from spillover.training.settings import train_params

        ctx = self.f.ctx
        if self._base_losses is None:
            key = _data_key(self.f, None, "", [], targets=True, rows=self.probe_rows, signal="base_loss")
            path = self.root / "probes" / f"base-{key}.json"
            self._base_losses = _cached(path, lambda: {"losses": self._losses(ctx.base_model())})["losses"]
        spec, split = _rows(self.f, task)
        key = _data_key(
            self.f,
            task,
            split,
            list(transforms),
            targets=True,
            rows=self.probe_rows,
            fraction=self.probe_fraction,
            signal="probe",
        )
        folder = self.root / "probes" / key

        def run() -> dict[str, Any]:
            start = time.perf_counter()
            settings = ctx.spec.train
            seqs = _sequences(self.f, spec, split, settings.limit, transforms)
            full = default_plan(seqs, train_params(settings, ctx.precision)).n_steps
            k = max(1, round(self.probe_fraction * full))
            short = settings.model_copy(update={"max_steps": k, "checkpoint_every": k})
            result = ctx.train_sequences(seqs, short, folder, progress=lambda _: None)
            with ctx.loaded(str(result.artifact)) as model:
                losses = self._losses(model)
            for kept in (result.artifact, folder / CHECKPOINTS):  # only the losses are kept
                shutil.rmtree(kept, ignore_errors=True)
            return {"steps": k, "of": full, "losses": losses, "seconds": time.perf_counter() - start}

        record = _cached(folder / "probe.json", run)
        gains = {
            t: self._base_losses[t] - v
            for t, v in record["losses"].items()
            if v is not None and self._base_losses.get(t) is not None
        }
        return gains, record["seconds"]


def _source_features(
    f: Finished,
    label: str,
    task: str,
    stats: DatasetStats,
    signals: Signals,
    transforms: list[dict],
    stats_seconds: float,
) -> SourceFeatures:
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
    if signals.grad_examples:
        to_targets[GRADIENT_FEATURE], cost["gradient"] = signals.gradient_cosines(task, transforms)
    if signals.probe_fraction:
        to_targets[PROBE_FEATURE], cost["probe"] = signals.probe_gains(task, transforms)
    spec = f.ctx.tasks[task]
    return SourceFeatures(
        task_type=spec.task_type or spec.type,
        to_sources=to_sources,
        to_targets={k: v for k, v in to_targets.items() if v},
        cost_seconds=cost,
        train_seconds=f.train_seconds.get(label),
    )


def study_features(f: Finished, signals: Signals) -> Study:
    """The measured sources' features (model signals computed or read from the cache)."""
    features = {
        s.name: _source_features(
            f, s.name, s.task, f.source_stats[s.name], signals, s.transforms, f.stats_seconds.get(s.name, 0.0)
        )
        for s in f.sources
    }
    return Study(delta=f.delta, q=f.q, features=features)


def _methods(signals: Signals) -> tuple[str, ...]:
    off = {GRADIENT} if not signals.grad_examples else set()
    off |= {PROBE} if not signals.probe_fraction else set()
    return tuple(m for m in METHODS if m not in off)


def evaluate(
    study_dir: str | Path,
    grad_examples: int | None = GRAD_EXAMPLES,
    probe_fraction: float | None = PROBE_FRACTION,
) -> Path:
    """Leave-one-source-out over a finished transfer study → `prediction/prediction_eval.csv`, then the
    study's report re-rendered, which copies it to `tables/prediction_eval.csv` (a re-render rewrites
    tables/ whole, so the file that lasts is the one under prediction/)."""
    f = load_finished(study_dir)
    signals = Signals(f, grad_examples, probe_fraction)
    table = evaluate_loso(study_features(f, signals), _methods(signals))
    atomic_write_text(f.root / PREDICTION / PREDICTION_EVAL, table.to_csv(index=False))
    _rerender(f)
    return f.root / "tables" / PREDICTION_EVAL


def predict(
    study_dir: str | Path,
    source: SourceSpec,
    out: str | Path | None = None,
    method: str = COMBINED,
    grad_examples: int | None = GRAD_EXAMPLES,
    probe_fraction: float | None = PROBE_FRACTION,
) -> Path:
    """The new source's predicted row → `predicted_delta.csv` (default: STUDY_DIR/prediction/<label>/)."""
    off = {GRADIENT: grad_examples, PROBE: probe_fraction}
    if method in off and not off[method]:
        raise SpilloverError(f"--method {method} needs its signal; it is switched off (0) here")
    f = load_finished(study_dir)
    if is_lm_eval_name(source.task):
        raise SpilloverError(f"{source.task} is an lm-eval task: a target only, not a source to predict")
    if source.task not in f.ctx.tasks:
        _add_task(f, source.task)
    if source.name in f.delta.index:
        raise SpilloverError(
            f"source '{source.name}' is already measured in {f.root}; its row is tables/delta_stats.csv"
        )
    signals = Signals(f, grad_examples, probe_fraction)
    study = study_features(f, signals)
    start = time.perf_counter()
    stats = _stats(f, source)
    stats_seconds = time.perf_counter() - start
    new = _source_features(f, source.name, source.task, stats, signals, source.transforms, stats_seconds)
    table = predicted_table(study, source.name, new, method)
    folder = Path(out) if out else f.root / PREDICTION / source.name
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "predicted_delta.csv", table.to_csv(index=False))
    cost = {k: round(v, 3) for k, v in new.cost_seconds.items()}
    atomic_write_text(folder / "cost.json", json.dumps(_cost(f, cost, method), indent=2))
    if out is None:  # the study's own prediction folder: its report shows the row
        _rerender(f)
    return folder / "predicted_delta.csv"


def _rerender(f: Finished) -> None:
    from spillover.studies.run import rerender_report

    log.info("re-rendering %s with the prediction", f.root / "report.html")
    rerender_report(f.root)


def _cost(f: Finished, seconds: dict[str, float], method: str) -> dict[str, Any]:
    trains = list(f.train_seconds.values())
    mean_train = sum(trains) / len(trains) if trains else None
    total = sum(seconds.values())
    return {
        "method": method,
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
