"""The mixture study's jobs (methods.md §5): the same tasks trained under several ratio vectors and
schedules, every task probed at regular checkpoints (score + behaviour), to see minor tasks degrade and
which task becomes the de-facto main task.

Plan: one `probe_base` job (the untuned model on every task: step 0 of every curve), one `train_mixture`
job per mixture (LoRA/full training on the mixed tasks with a `CheckpointEvaluator` hook probing every
task every `checkpoints.every` steps and at the end), and one `analyse` job.
"""

from __future__ import annotations

from spillover.config import NOT_RESULT_AFFECTING, EvalSettings, TrainSettings
from spillover.engine.plan import JobParams, Plan
from spillover.studies.contract import BASE
from spillover.studies.jobs import ModelJob
from spillover.studies.mixture.spec import CheckpointSettings, MixtureStudySpec, RecommendSettings

EVAL_NEUTRAL = ("eval.compile",)


class MixtureJob(ModelJob):
    """Fields of every job that probes the study's tasks: what is probed (`eval`, `checkpoints`) and the
    training rows whose outputs are each task's style reference (`train_limit`)."""

    cache_neutral = EVAL_NEUTRAL
    label: str
    tasks: list[str]
    data: dict[str, dict[str, str]]
    train_limit: int | None
    eval: EvalSettings
    checkpoints: CheckpointSettings


class ProbeBaseJob(MixtureJob):
    """Probe the untuned model on every task's held-out slice: step 0 of every curve."""

    cache_neutral = EVAL_NEUTRAL + ("checkpoints.every",)  # step 0 alone: the interval changes nothing


class TrainMixtureJob(MixtureJob):
    """Train on the tasks mixed by `train.mixture`, probing every task at checkpoints."""

    cache_neutral = EVAL_NEUTRAL + tuple(f"train.{name}" for name in NOT_RESULT_AFFECTING)
    train: TrainSettings


class MixtureAnalyseJob(JobParams):
    """The analyse job: the curves' tasks and the mixtures, in study order."""

    tasks: list[str]
    mixtures: list[str]
    recommend: RecommendSettings


def build_plan(spec: MixtureStudySpec, fingerprints: dict[str, dict[str, str]]) -> Plan:
    """The study's DAG. `fingerprints[task]` = {"spec": ..., "train": ..., "test": ...} content hashes."""
    plan = Plan()
    common = {
        "model": spec.model,
        "precision": spec.precision,
        "tasks": spec.tasks,
        "data": {t: fingerprints[t] for t in spec.tasks},
        "train_limit": spec.train.limit,
        "eval": spec.eval,
        "checkpoints": spec.checkpoints,
    }
    deps = [plan.add("probe_base", "probe base model", ProbeBaseJob(**common, label=BASE))]
    for m in spec.mixtures:
        train = spec.train.model_copy(update={"mixture": m.settings()})
        params = TrainMixtureJob(**common, label=m.name, train=train)
        deps.append(plan.add("train_mixture", f"train mixture {m.name}", params))
    mixtures = [m.name for m in spec.mixtures]
    plan.add(
        "analyse",
        "analyse + report",
        MixtureAnalyseJob(tasks=spec.tasks, mixtures=mixtures, recommend=spec.recommend),
        deps=deps,
    )
    return plan
