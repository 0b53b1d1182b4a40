"""The job kinds every study shares — `stats`, `train`, `eval` — with their typed parameters and handlers.

A kind that needs more fields on one of these subclasses its parameters (e.g. the generalization study's
eval jobs carry source, method, size and shots for the analysis); the handlers read only the fields here.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from spillover.config import NOT_RESULT_AFFECTING, EvalSettings, TrainSettings
from spillover.data.sft import build_sequences
from spillover.data.tasks import Example
from spillover.engine.plan import Job, JobParams, Plan, params_json
from spillover.engine.tracking import RunSpec, compose
from spillover.errors import SpilloverError
from spillover.studies.context import StudyContext
from spillover.studies.contract import JobOutput


class ModelJob(JobParams):
    """Fields of every job that loads the study's model."""

    model: str
    precision: str


class StatsJob(ModelJob):
    """Dataset statistics of one split of one task (optionally transformed)."""

    role: str  # "source" or "target": which side of the matrix the statistics describe
    label: str
    task: str
    data: dict[str, str]
    split: str
    limit: int | None
    transforms: list[dict[str, Any]] = []
    sample: int


class TrainJob(ModelJob):
    """Fine-tune on one task (optionally transformed) with the given settings."""

    cache_neutral = tuple(f"train.{name}" for name in NOT_RESULT_AFFECTING)
    task: str
    data: dict[str, str]
    transforms: list[dict[str, Any]] = []
    train: TrainSettings


class EvalJob(ModelJob):
    """Evaluate the base model, or the model its one dependency trained (WiSE-FT mix when `alpha` < 1)."""

    cache_neutral = ("eval.compile",)
    label: str
    target: str
    data: dict[str, str]
    eval: EvalSettings
    alpha: float = 1.0


def trained_artifact(ctx: StudyContext, plan: Plan, job: Job) -> tuple[Job | None, str | None]:
    """The training job a job depends on (its first dependency), and the model folder it wrote."""
    trained = plan.jobs[job.deps[0]] if job.deps else None
    return trained, (ctx.store.result(trained.id)["artifact"] if trained else None)


def stats_job(ctx: StudyContext, plan: Plan, job: Job) -> JobOutput:
    """Dataset statistics of the job's data (methods.md §1)."""
    from spillover.data.stats import dataset_stats

    p: StatsJob = job.params
    examples = ctx.examples(p.task, p.split, p.limit, p.transforms)
    stats = dataset_stats(
        examples,
        ctx.tokenizer,
        ctx.tasks[p.task].labels,
        embedder=ctx.embedder(),
        parser=ctx.parser(),
        max_sample=p.sample,
        seed=ctx.spec.seed,
    )
    return stats.to_dict(), []


def train_job(ctx: StudyContext, plan: Plan, job: Job, examples: list[Example] | None = None) -> JobOutput:
    """Train in the job's folder (resumable); the result names the saved adapter or model (`artifact`)."""
    p: TrainJob = job.params
    settings = p.train
    if settings.mixture is not None:  # one task per job here: a mixture would be silently meaningless
        raise SpilloverError(
            f"{job.name}: train.mixture needs several tasks (the mixture study or `spillover train`)"
        )
    if examples is None:
        examples = ctx.examples(p.task, "train", settings.limit, p.transforms)
    seqs = build_sequences(
        ctx.tasks[p.task],
        ctx.tokenizer,
        examples,
        settings.max_len,
        settings.shots,
        settings.seed,
        demos=settings.demos,
    )
    with ctx.tracker.run(RunSpec(job.name, job.id, params_json(job.params)), training=True) as run:
        progress = compose(ctx.progress, run.log_record)
        folder = ctx.store.job_dir(job.id)
        result = ctx.train_sequences(seqs, settings, folder, progress, train_tasks=[p.task], log=run.log)
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(result).items()}, []


def eval_job(ctx: StudyContext, plan: Plan, job: Job) -> JobOutput:
    """Score the job's model on its target's test split; predictions go to the job's folder."""
    from spillover.analysis.behaviour import behaviour_stats
    from spillover.evaluation.evaluate import evaluate_task
    from spillover.evaluation.predictions import read_predictions

    p: EvalJob = job.params
    trained, artifact = trained_artifact(ctx, plan, job)
    task, e = ctx.tasks[p.target], p.eval
    folder = ctx.store.job_dir(job.id)
    with ctx.loaded(artifact, p.alpha) as model:
        r = evaluate_task(
            model,
            ctx.tokenizer,
            task,
            limit=e.limit,
            shots=e.shots,
            seed=e.seed,
            batch_size=e.batch_size,
            precision=ctx.precision,
            compile=e.compile,
            predictions_path=folder / "predictions.jsonl",
        )
    behaviour = behaviour_stats(read_predictions(folder / "predictions.jsonl"), ctx.tokenizer).to_dict()
    score = {
        "model": p.label,
        "target": task.name,
        "metric": r.metric,
        "value": r.value,
        "n": r.n,
        "ci_low": r.ci_low,
        "ci_high": r.ci_high,
        "shots": r.shots,
        "extra": r.extra,
    }
    # the task's own metric first, then one row per metric reported beside it (classification: macro-F1,
    # balanced accuracy): same model and target, so analyses pivot on the task's own metric only
    beside = [
        dict(score, metric=m.metric, value=m.value, ci_low=m.ci_low, ci_high=m.ci_high, extra={})
        for m in r.beside
    ]
    ctx.track_scores(trained, [score, *beside])
    return {"result": asdict(r), "behaviour": behaviour}, [score, *beside]


SHARED_HANDLERS = {"stats": stats_job, "train": train_job, "eval": eval_job}
