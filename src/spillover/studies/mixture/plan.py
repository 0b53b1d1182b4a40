"""The mixture study (methods.md §5): the same tasks trained under several ratio vectors and schedules,
every task probed at regular checkpoints (score + behaviour), to see minor tasks degrade and which task
becomes the de-facto main task.

Plan: one `probe_base` job (the untuned model on every task: step 0 of every curve), one `train_mixture`
job per mixture (LoRA/full training on the mixed tasks with a `CheckpointEvaluator` hook probing every
task every `checkpoints.every` steps and at the end), and one `analyse` job.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from spillover.analysis.behaviour import DEFAULT_HEDGES
from spillover.api import mixture_plan
from spillover.config import Strict, StudySpec, TrainSettings
from spillover.data.mixture import MixtureSettings
from spillover.data.sft import build_multitask_sequences
from spillover.data.tasks import TaskSpec
from spillover.engine.plan import Job, Plan
from spillover.engine.tracking import RunSpec, compose
from spillover.errors import SpilloverError
from spillover.evaluation.checkpoint_eval import (
    CheckpointEvaluator,
    ProbeSettings,
    collect,
    probe,
    style_references,
)

BASE = "base"
PROBES = "probes"


class MixtureEntry(MixtureSettings):
    """One mixture of the study: a `mixture:` section with a name."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")

    def settings(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"name"}, exclude_none=True)


class CheckpointSettings(BaseModel):
    """When and how each task is probed during training (the held-out slice is `eval.limit` test rows)."""

    model_config = Strict
    every: int = Field(default=10, ge=1, description="probe every N optimiser steps (and at the last)")
    free_tokens: int = Field(default=8, ge=0, le=256, description="free generation on classification prompts")
    max_new_tokens: int | None = Field(
        default=32, ge=1, description="cap on generation tasks' max_new_tokens"
    )
    hedges: list[str] = Field(
        default_factory=lambda: list(DEFAULT_HEDGES), description="hedge/refusal phrases"
    )


class MixtureStudySpec(StudySpec):
    study: Literal["mixture"] = "mixture"
    tasks: list[str] = Field(min_length=2)
    mixtures: list[MixtureEntry] = Field(min_length=1)
    checkpoints: CheckpointSettings = Field(default_factory=CheckpointSettings)

    @model_validator(mode="after")
    def _consistent(self) -> MixtureStudySpec:
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks has duplicates: {self.tasks}")
        names = [m.name for m in self.mixtures]
        if len(set(names)) != len(names) or BASE in names:
            raise ValueError(f"mixture names must be unique and not '{BASE}': {names}")
        if self.train.mixture is not None:
            raise ValueError("a mixture study takes its mixtures from `mixtures:`; remove `train.mixture`")
        if self.eval.shots:
            raise ValueError("the mixture study probes zero-shot; set eval.shots: 0")
        return self

    def task_names(self) -> list[str]:
        return list(self.tasks)


def check_inputs(spec: MixtureStudySpec, tasks: dict[str, TaskSpec], load) -> None:
    """Every task has a train and a test split; every mixture's ratios name exactly the study's tasks."""
    sizes = []
    for name in spec.tasks:
        if tasks[name].train is None:
            raise SpilloverError(f"task '{name}' has no train split (set `train:` in its task spec)")
        sizes.append(len(load(name, "train", spec.train.limit)))
        load(name, "test", 1)
    for i, m in enumerate(spec.mixtures):
        m.to_schedule(spec.tasks, sizes, where=f"mixtures[{i}] ({m.name})")


def build_plan(spec: MixtureStudySpec, fingerprints: dict[str, dict[str, str]]) -> Plan:
    plan = Plan()
    common = {
        "model": spec.model,
        "precision": spec.precision,
        "tasks": spec.tasks,
        "data": {t: fingerprints[t] for t in spec.tasks},
        "train_limit": spec.train.limit,
        "eval": spec.eval.job_params(),
        "checkpoints": spec.checkpoints.model_dump(mode="json"),
    }
    deps = [plan.add("probe_base", "probe base model", {**common, "label": BASE})]
    tr = spec.train.job_params()
    for m in spec.mixtures:
        deps.append(
            plan.add(
                "train_mixture",
                f"train mixture {m.name}",
                {**common, "label": m.name, "train": {**tr, "mixture": m.settings()}},
            )
        )
    plan.add(
        "analyse",
        "analyse + report",
        {"tasks": spec.tasks, "mixtures": [m.name for m in spec.mixtures]},
        deps=deps,
    )
    return plan


def _probe_settings(ctx, p: dict[str, Any]) -> ProbeSettings:
    c, e = p["checkpoints"], p["eval"]
    return ProbeSettings(
        e["limit"],
        e["batch_size"],
        c["free_tokens"],
        tuple(c["hedges"]),
        c["max_new_tokens"],
        compile=ctx.spec.eval.compile,
    )


def _train_parts(ctx, p: dict[str, Any], limit: int | None):
    return [(ctx.tasks[t], ctx.examples(t, "train", limit)) for t in p["tasks"]]


def probe_base_job(ctx, plan: Plan, job: Job) -> tuple[dict[str, Any], list[dict]]:
    """The untuned model on every task (step 0), into jobs/<id>/probes/step-000000/<task>/."""
    p = job.params
    parts = _train_parts(ctx, p, p["train_limit"])
    styles = style_references({t.name: ex for t, ex in parts})
    root = ctx.store.job_dir(job.id) / PROBES
    for task, _ in parts:
        folder = root / "step-000000" / task.name
        if not (folder / "result.json").exists():
            probe(
                ctx.base_model(), ctx.tokenizer, task, _probe_settings(ctx, p), styles, folder, ctx.precision
            )
    probes = collect(root)
    return {"probes": probes}, []  # scores live in the probes (the store keeps one score row per job)


def train_mixture_job(ctx, plan: Plan, job: Job) -> tuple[dict[str, Any], list[dict]]:
    """Train on one mixture (resumable), probing every task at checkpoints into jobs/<id>/probes/."""
    p = job.params
    settings = TrainSettings.for_job(p["train"], ctx.spec.train)
    parts = _train_parts(ctx, p, settings.limit)
    names, sizes = [t.name for t, _ in parts], [len(ex) for _, ex in parts]
    seqs = build_multitask_sequences(parts, ctx.tokenizer, settings.max_len, settings.shots, settings.seed)
    steps = mixture_plan(settings, names, sizes, seqs)
    folder = ctx.store.job_dir(job.id)
    hook = CheckpointEvaluator(
        [t for t, _ in parts],
        ctx.tokenizer,
        _probe_settings(ctx, p),
        style_references(dict(zip(names, (ex for _, ex in parts), strict=True))),
        folder / PROBES,
        p["checkpoints"]["every"],
        steps.n_steps,
        ctx.precision,
    )
    with ctx.tracker.run(RunSpec(job.name, job.id, job.params), training=True) as run:
        result = ctx.train_sequences(
            seqs, settings, folder, compose(ctx.progress, run.log_record), hooks=[hook], plan=steps
        )
    probes = collect(folder / PROBES)
    out = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(result).items()}
    return {**out, "mixture": steps.summary(), "probes": probes}, []


JOBS = {"probe_base": probe_base_job, "train_mixture": train_mixture_job}
