"""The mixture study's own job kinds: `probe_base` (the untuned model at step 0) and `train_mixture` (train
on one mixture, probing every task at checkpoints). Probing, the step plan and the loop are library code
(`evaluation.checkpoint_eval`, `training.mixture_plan`, `training.loop`); these only wire them up."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from spillover.data.sft import build_multitask_sequences
from spillover.data.tasks import Example, TaskSpec
from spillover.engine.plan import Job, Plan, params_json
from spillover.engine.tracking import RunSpec, compose
from spillover.evaluation.checkpoint_eval import CheckpointEvaluator, collect, style_references
from spillover.studies.context import StudyContext
from spillover.studies.contract import JobOutput
from spillover.studies.mixture.plan import MixtureJob, ProbeBaseJob, TrainMixtureJob
from spillover.training.mixture_plan import plan_for_settings

PROBES = "probes"  # a job's probe records: jobs/<id>/probes/step-NNNNNN/<task>/


def _train_parts(ctx: StudyContext, p: MixtureJob, limit: int | None) -> list[tuple[TaskSpec, list[Example]]]:
    """Each task with its training rows (first `limit`), in the study's task order."""
    return [(ctx.tasks[t], ctx.examples(t, "train", limit)) for t in p.tasks]


def _evaluator(
    ctx: StudyContext, p: MixtureJob, parts: list[tuple[TaskSpec, list[Example]]], root: Path, n_steps: int
) -> CheckpointEvaluator:
    """Probes every task into `root`; each task's style reference is its training rows' outputs."""
    styles = style_references({task.name: examples for task, examples in parts})
    settings = p.checkpoints.probe_settings(p.eval)
    tasks = [task for task, _ in parts]
    return CheckpointEvaluator(
        tasks, ctx.tokenizer, settings, styles, root, p.checkpoints.every, n_steps, ctx.precision
    )


def probe_base_job(ctx: StudyContext, plan: Plan, job: Job) -> JobOutput:
    """The untuned model on every task (step 0), into jobs/<id>/probes/step-000000/<task>/."""
    p: ProbeBaseJob = job.params
    root = ctx.store.job_dir(job.id) / PROBES
    _evaluator(ctx, p, _train_parts(ctx, p, p.train_limit), root, n_steps=0).evaluate(ctx.base_model(), 0)
    return {"probes": collect(root)}, []  # scores live in the probes (the store keeps one score row per job)


def train_mixture_job(ctx: StudyContext, plan: Plan, job: Job) -> JobOutput:
    """Train on one mixture (resumable), probing every task at checkpoints into jobs/<id>/probes/."""
    p: TrainMixtureJob = job.params
    settings = p.train
    parts = _train_parts(ctx, p, settings.limit)
    names, sizes = [t.name for t, _ in parts], [len(ex) for _, ex in parts]
    seqs = build_multitask_sequences(parts, ctx.tokenizer, settings.max_len, settings.shots, settings.seed)
    steps = plan_for_settings(settings, names, sizes, seqs)
    folder = ctx.store.job_dir(job.id)
    hook = _evaluator(ctx, p, parts, folder / PROBES, steps.n_steps)
    with ctx.tracker.run(RunSpec(job.name, job.id, params_json(job.params)), training=True) as run:
        progress = compose(ctx.progress, run.log_record)
        result = ctx.train_sequences(
            seqs, settings, folder, progress, hooks=[hook], plan=steps, train_tasks=names, log=run.log
        )
    out = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(result).items()}
    return {**out, "mixture": steps.summary(), "probes": collect(folder / PROBES)}, []


HANDLERS = {"probe_base": probe_base_job, "train_mixture": train_mixture_job}
