"""The multitask study's own job kinds (`StudyKind.handlers`): probe, cores, mt_train, sequential.

Storage: every trained model keeps only its final artifact (model/ for full fine-tuning, in the model's
parameter dtype; adapter/ for LoRA); optimiser checkpoints are deleted when a run is saved. Core regions
are stored as flat int64 indices per tensor (`cores/<job>/masks/<task>.safetensors`, ~8 bytes per core
element: 11 MB per task at p = 1% of 135M parameters) instead of full boolean masks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import load_file, save_file

from spillover.config import TrainSettings
from spillover.data.sft import build_multitask_sequences, build_sequences
from spillover.engine.plan import Job, Plan
from spillover.engine.tracking import RunSpec, compose
from spillover.merging.fuse import fuse_models
from spillover.studies.multitask_analysis import core_location_rows, sweep_rows
from spillover.studies.multitask_state import initial_state, train_from, trained_state
from spillover.training.masks import (
    FreezeHook,
    mask_from_indices,
    mask_size,
    mask_to_indices,
    mask_union,
    top_p_mask,
    update_magnitudes,
)
from spillover.training.stages import ORDERS, balanced_sample, group_tasks, jaccard_matrix, order_groups

JobOutput = tuple[dict[str, Any], list[dict[str, Any]]]
MASKS = "masks"


def _settings(ctx, job: Job) -> TrainSettings:
    return TrainSettings.for_job(job.params["train"], ctx.spec.train)


def _train(ctx, job: Job, sequences, settings, out_dir: Path, start=None, hooks=(), part: str = ""):
    """`train_from` with the job's progress and tracking run (one run per stage: `part` names it)."""
    spec = RunSpec(f"{job.name}{part}", f"{job.id}{part.replace(' ', '-')}", job.params)
    with ctx.tracker.run(spec, training=True) as run:
        return train_from(
            ctx, sequences, settings, out_dir, start, hooks, compose(ctx.progress, run.log_record)
        )


def _sequences(ctx, settings: TrainSettings, parts):
    """parts: [(task name, examples)] → training sequences (one task: `build_sequences`)."""
    specs = [(ctx.tasks[t], ex) for t, ex in parts]
    if len(specs) == 1:
        task, ex = specs[0]
        return build_sequences(
            task, ctx.tokenizer, ex, settings.max_len, settings.shots, settings.seed, demos=settings.demos
        )
    return build_multitask_sequences(
        specs, ctx.tokenizer, settings.max_len, settings.shots, settings.seed, settings.demos
    )


def _out(result) -> dict[str, Any]:
    return {
        "artifact": str(result.artifact),
        "n_steps": result.n_steps,
        "n_tokens": result.n_tokens,
        "seconds": result.seconds,
        "final_loss": result.final_loss,
    }


def probe_job(ctx, plan: Plan, job: Job) -> JobOutput:
    """Single-task fine-tune θ⁽ⁱ⁾ on the task's training data (the study's `train:`)."""
    settings, task = _settings(ctx, job), job.params["task"]
    seqs = _sequences(ctx, settings, [(task, ctx.examples(task, "train", settings.limit))])
    return {"task": task, **_out(_train(ctx, job, seqs, settings, ctx.store.job_dir(job.id)))}, []


def _probe_artifacts(ctx, plan: Plan) -> dict[str, str]:
    return {j.params["task"]: ctx.store.result(j.id)["artifact"] for j in plan.by_kind("probe")}


def cores_job(ctx, plan: Plan, job: Job) -> JobOutput:
    """Core regions at the configured p, Jaccard matrix, where the cores live, and the p × τ sweep. Masks
    saved as indices under masks/."""
    p, cfg, settings = job.params, job.params["cpi"], _settings(ctx, job)
    init = initial_state(ctx, settings)
    artifacts = _probe_artifacts(ctx, plan)
    mags = {t: update_magnitudes(trained_state(ctx, artifacts[t], settings), init) for t in p["tasks"]}
    masks = {t: top_p_mask(mags[t], cfg["p"], cfg["scope"]) for t in p["tasks"]}
    folder = ctx.store.job_dir(job.id) / MASKS
    folder.mkdir(parents=True, exist_ok=True)
    for t, m in masks.items():
        save_file(
            {k: v.contiguous() for k, v in mask_to_indices(m).items()}, str(folder / f"{t}.safetensors")
        )
    sim = jaccard_matrix([masks[t] for t in p["tasks"]])
    return {
        "tasks": p["tasks"],
        "jaccard": sim.tolist(),
        "core_sizes": {t: mask_size(m) for t, m in masks.items()},
        "n_params": sum(v.numel() for v in init.values()),
        "location": core_location_rows(masks, init),
        "sweep": sweep_rows(mags, cfg["sweep"]["p"], cfg["sweep"]["tau"], cfg["scope"], p["tasks"]),
    }, []


def stage_plan(jaccard: list[list[float]], tasks: list[str], tau: float, seed: int):
    """(groups at τ, {order: stages}) as task names, from the cores job's Jaccard matrix."""
    sim = np.asarray(jaccard)
    groups = group_tasks(sim, tau)
    names = lambda gs: [[tasks[i] for i in g] for g in gs]  # noqa: E731
    return names(groups), {o: names(order_groups(groups, sim, o, seed)) for o in ORDERS}


def load_masks(ctx, plan: Plan, tasks: list[str], shapes) -> dict[str, dict]:
    (cores,) = plan.by_kind("cores")
    folder = ctx.store.job_dir(cores.id) / MASKS
    return {t: mask_from_indices(load_file(str(folder / f"{t}.safetensors")), shapes) for t in tasks}


def mt_train_job(ctx, plan: Plan, job: Job) -> JobOutput:
    """joint: one run on every task's data; multistage_*: the CPI groups as stages in that order, each
    stage on its tasks' data, no isolation; cpi: fusion, then the stages on a balanced sample of
    `cpi.calibration` examples per task, freezing every core of the earlier stages."""
    p, settings = job.params, _settings(ctx, job)
    folder = ctx.store.job_dir(job.id)
    data = {t: ctx.examples(t, "train", settings.limit) for t in p["tasks"]}
    if p["method"] == "joint":
        seqs = _sequences(ctx, settings, list(data.items()))
        return {
            "method": "joint",
            "stages": [p["tasks"]],
            **_out(_train(ctx, job, seqs, settings, folder)),
        }, []
    (cores,) = plan.by_kind("cores")
    found = ctx.store.result(cores.id)
    order = p["cpi"]["order"] if p["method"] == "cpi" else p["method"].removeprefix("multistage_")
    stages = stage_plan(found["jaccard"], found["tasks"], p["cpi"]["tau"], p["seed"])[1][order]
    if p["method"] == "cpi":
        return _cpi(ctx, plan, job, settings, data, stages, folder)
    start, info = None, []
    for k, stage in enumerate(stages):
        seqs = _sequences(ctx, settings, [(t, data[t]) for t in stage])
        result = _train(ctx, job, seqs, settings, folder / f"stage-{k + 1}", start, part=f" stage {k + 1}")
        info.append({"stage": k + 1, "tasks": stage, **_out(result)})
        start = trained_state(ctx, result.artifact, settings) if k + 1 < len(stages) else None
    return _staged_result(p["method"], stages, info), []


def _staged_result(method: str, stages, info: list[dict]) -> dict[str, Any]:
    last = info[-1]
    return {
        "method": method,
        "stages": stages,
        "stage_runs": info,
        "artifact": last["artifact"],
        "n_steps": sum(i["n_steps"] for i in info),
        "n_tokens": sum(i["n_tokens"] for i in info),
        "seconds": sum(i["seconds"] for i in info),
        "final_loss": last["final_loss"],
    }


def _cpi(ctx, plan: Plan, job: Job, settings, data, stages: list[list[str]], folder: Path) -> JobOutput:
    cfg = job.params["cpi"]
    order = [t for stage in stages for t in stage]
    init = initial_state(ctx, settings)
    artifacts = _probe_artifacts(ctx, plan)
    tuned = [trained_state(ctx, artifacts[t], settings) for t in order]
    masks = load_masks(ctx, plan, order, {n: v.shape for n, v in init.items()})
    base = tuned[-1] if cfg["fusion_base"] == "last_probe" else init
    start, stats = fuse_models(init, base, tuned, [masks[t] for t in order], cfg["omega"], cfg["epsilon"])
    del tuned
    info = []
    for k, stage in enumerate(stages):
        frozen = mask_union(masks[t] for s in stages[:k] for t in s)
        picks = balanced_sample([len(data[t]) for t in stage], cfg["calibration"], settings.seed + k)
        parts = [(t, [data[t][i] for i in idx]) for t, idx in zip(stage, picks, strict=True)]
        hooks = [FreezeHook(frozen)] if frozen else []
        result = _train(
            ctx,
            job,
            _sequences(ctx, settings, parts),
            settings,
            folder / f"stage-{k + 1}",
            start,
            hooks,
            part=f" stage {k + 1}",
        )
        info.append(
            {
                "stage": k + 1,
                "tasks": stage,
                "frozen": mask_size(frozen),
                **_out(result),
                "examples": sum(len(i) for i in picks),
            }
        )
        start = trained_state(ctx, result.artifact, settings) if k + 1 < len(stages) else None
    fusion = {
        "base": cfg["fusion_base"],
        "base_task": order[-1] if cfg["fusion_base"] == "last_probe" else None,
        "tensors_slerp": stats.n_slerp,
        "tensors_lerp": stats.n_lerp,
        "collisions": stats.collisions,
        "transplanted": dict(zip(order, stats.transplanted, strict=True)),
    }
    return {**_staged_result("cpi", stages, info), "fusion": fusion}, []


def sequential_job(ctx, plan: Plan, job: Job) -> JobOutput:
    """Start from the first task's probe (= trained on A), train on B's data; `cpi`: A's core frozen."""
    p, settings = job.params, _settings(ctx, job)
    a, b = p["first"], p["second"]
    start = trained_state(ctx, _probe_artifacts(ctx, plan)[a], settings)
    hooks, frozen = [], 0
    if p["method"] == "cpi":
        mask = load_masks(ctx, plan, [a], {n: v.shape for n, v in start.items()})[a]
        hooks, frozen = [FreezeHook(mask)], mask_size(mask)
    seqs = _sequences(ctx, settings, [(b, ctx.examples(b, "train", settings.limit))])
    result = _train(ctx, job, seqs, settings, ctx.store.job_dir(job.id), start, hooks)
    return {"method": p["method"], "first": a, "second": b, "frozen": frozen, **_out(result)}, []


HANDLERS = {"probe": probe_job, "cores": cores_job, "mt_train": mt_train_job, "sequential": sequential_job}
