"""The transfer study's jobs (methods.md §1): fine-tune one adapter per source, evaluate base + every adapter
on every target, and explain the resulting matrix with latent traits and dataset statistics.

Plan: one `stats` job per distinct dataset (each source variant's training data, each target's test data),
one `eval` job for the base model per target, then per source a `train` job followed by its `eval` jobs,
and one `analyse` job over everything. Costs grow as sources + targets for training, statistics and model
loading; only evaluation is sources × targets.
"""

from __future__ import annotations

from spillover.engine.plan import JobParams, Plan
from spillover.studies.contract import BASE
from spillover.studies.jobs import EvalJob, StatsJob, TrainJob
from spillover.studies.transfer.spec import TransferAnalysisSpec, TransferStudySpec


class TransferAnalyseJob(JobParams):
    """The analyse job: the analysis settings and the matrix's rows and columns."""

    analysis: TransferAnalysisSpec
    sources: list[str]
    targets: list[str]


def build_plan(spec: TransferStudySpec, fingerprints: dict[str, dict[str, str]]) -> Plan:
    """The study's DAG. `fingerprints[task]` = {"spec": ..., "train": ..., "test": ...} content hashes."""
    plan = Plan()
    model = {"model": spec.model, "precision": spec.precision}
    stats = []
    for s in spec.sources:
        params = StatsJob(
            **model,
            role="source",
            label=s.name,
            task=s.task,
            data=fingerprints[s.task],
            split="train",
            limit=spec.train.limit,
            transforms=s.transforms,
            sample=spec.stats.sample,
        )
        stats.append(plan.add("stats", f"stats {s.name} (train)", params))
    for t in spec.targets:
        params = StatsJob(
            **model,
            role="target",
            label=t,
            task=t,
            data=fingerprints[t],
            split="test",
            limit=spec.eval.limit,
            sample=spec.stats.sample,
        )
        stats.append(plan.add("stats", f"stats {t} (test)", params))
    evals = []
    for t in spec.targets:
        params = EvalJob(**model, label=BASE, target=t, data=fingerprints[t], eval=spec.eval)
        evals.append(plan.add("eval", f"eval base -> {t}", params))
    for s in spec.sources:
        trained = TrainJob(
            **model, task=s.task, data=fingerprints[s.task], transforms=s.transforms, train=spec.train
        )
        train_id = plan.add("train", f"train {s.name}", trained)
        for t in spec.targets:
            params = EvalJob(**model, label=s.name, target=t, data=fingerprints[t], eval=spec.eval)
            evals.append(plan.add("eval", f"eval {s.name} -> {t}", params, deps=[train_id]))
    sources = [s.name for s in spec.sources]
    analyse = TransferAnalyseJob(analysis=spec.analysis, sources=sources, targets=spec.targets)
    plan.add("analyse", "analyse + report", analyse, deps=[*stats, *evals])
    return plan
