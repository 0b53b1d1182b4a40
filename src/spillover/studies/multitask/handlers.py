"""The multitask study's own job kinds (`StudyKind.handlers`): probe, cores, mt_train, sequential. Each one
orchestrates: it reads the study's data and saved models and calls CPI-FT's pieces in the library
(`training.cpi`, `training.masks`, `merging.fuse`).

Storage: every trained model keeps only its final artifact (model/ for full fine-tuning, in the model's
parameter dtype; adapter/ for LoRA); optimiser checkpoints are deleted when a run is saved. Core regions
are stored as flat int64 indices per tensor (`cores/<job>/masks/<task>.safetensors`, ~8 bytes per core
element: 11 MB per task at p = 1% of 135M parameters) instead of full boolean masks.

Memory (full fine-tuning of a 135M model, 540 MB per fp32 copy): `cores` holds one task's update
magnitudes at a time (flat, fp32) and keeps every core as indices (`training.masks.IndexMask`); its peak
is θ0 and one task's magnitudes (the selection, `training.masks._top_k`, streams over them: 8 bytes per
selected element), with θ0 set aside during the selection. `cpi` and `sequential` read cores as indices too, and CPI-FT's fused start is
written to the job folder (fp32, exact) and read back tensor by tensor by the first stage, so no state
but the training copy is in memory while a stage trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from spillover.config import TrainSettings
from spillover.data.sft import build_multitask_sequences, build_sequences
from spillover.data.tasks import Example
from spillover.engine.plan import Job, Plan, params_json
from spillover.engine.tracking import RunSpec, compose
from spillover.models.deltas import FileState
from spillover.studies.context import StudyContext
from spillover.studies.contract import JobOutput
from spillover.studies.multitask.analysis import core_location_rows, sweep_rows
from spillover.studies.multitask.plan import CoresJob, MtTrainJob, ProbeJob, SequentialJob
from spillover.studies.multitask.states import initial_state, train_run, trained_state
from spillover.training.cpi import (
    State,
    check_full_state,
    cpi_stages,
    fuse_probes,
    stage_plan,
    train_stages,
)
from spillover.training.masks import (
    FreezeHook,
    IndexMask,
    flat_update_magnitudes,
    mask_size,
    top_p_indices,
)
from spillover.training.stages import jaccard_matrix
from spillover.training.types import TrainResult

MASKS = "masks"
FUSED = "fused.safetensors"  # CPI-FT's fused start, in the job folder until the staged training is done


def _train(
    ctx: StudyContext,
    job: Job,
    sequences,
    settings: TrainSettings,
    out_dir: Path,
    start: State | None = None,
    hooks=(),
    part: str = "",
    *,
    tasks: list[str],
) -> TrainResult:
    """`states.train_run` with the job's progress and tracking run (one run per stage: `part` names it);
    `tasks`: the tasks `sequences` come from (the default eval tasks of `train.eval_every`)."""
    spec = RunSpec(f"{job.name}{part}", f"{job.id}{part.replace(' ', '-')}", params_json(job.params))
    with ctx.tracker.run(spec, training=True) as run:
        progress = compose(ctx.progress, run.log_record)
        return train_run(ctx, sequences, settings, out_dir, start, hooks, progress, tasks, run.log)


def _sequences(ctx: StudyContext, settings: TrainSettings, parts: list[tuple[str, list[Example]]]):
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


def _out(result: TrainResult) -> dict[str, Any]:
    return {
        "artifact": str(result.artifact),
        "n_steps": result.n_steps,
        "n_tokens": result.n_tokens,
        "seconds": result.seconds,
        "final_loss": result.final_loss,
    }


def probe_job(ctx: StudyContext, plan: Plan, job: Job) -> JobOutput:
    """Single-task fine-tune θ⁽ⁱ⁾ on the task's training data (the study's `train:`)."""
    p: ProbeJob = job.params
    seqs = _sequences(ctx, p.train, [(p.task, ctx.examples(p.task, "train", p.train.limit))])
    result = _train(ctx, job, seqs, p.train, ctx.store.job_dir(job.id), tasks=[p.task])
    return {"task": p.task, **_out(result)}, []


def _probe_artifacts(ctx: StudyContext, plan: Plan, job: Job) -> dict[str, str]:
    """The saved models of the probes `job` depends on, by task (a job reads only its dependencies)."""
    probes = [plan.jobs[d] for d in job.deps if plan.jobs[d].kind == "probe"]
    return {j.params.task: ctx.store.result(j.id)["artifact"] for j in probes}


def cores_job(ctx: StudyContext, plan: Plan, job: Job) -> JobOutput:
    """Core regions at the configured p, Jaccard matrix, where the cores live, and the p × τ sweep. Masks
    saved as indices under masks/."""
    p: CoresJob = job.params
    init = initial_state(ctx, p.train)
    n_params = sum(v.numel() for v in init.values())
    artifacts = _probe_artifacts(ctx, plan, job)
    ps = list(dict.fromkeys([p.p, *p.sweep.p]))  # every p once: the sweep's p = p.p is the same cores
    found: dict[float, dict[str, IndexMask]] = {q: {} for q in ps}
    for t in p.tasks:  # one task's magnitudes in memory at a time
        tuned = trained_state(ctx, artifacts[t], p.train)
        check_full_state(tuned)
        flat, shapes = flat_update_magnitudes(tuned, init)
        del tuned
        ctx.release_base()  # θ0 is not needed for the selection
        for q in ps:
            found[q][t] = top_p_indices(flat, shapes, q, p.scope)
        del flat
    masks = found[p.p]
    folder = ctx.store.job_dir(job.id) / MASKS
    folder.mkdir(parents=True, exist_ok=True)
    for t, m in masks.items():
        save_file({k: v.contiguous() for k, v in m.indices.items()}, str(folder / f"{t}.safetensors"))
    sim = jaccard_matrix([masks[t] for t in p.tasks])
    return {
        "tasks": p.tasks,
        "jaccard": sim.tolist(),
        "core_sizes": {t: mask_size(m) for t, m in masks.items()},
        "n_params": n_params,
        "location": core_location_rows(masks, shapes),
        "sweep": sweep_rows({q: [found[q][t] for t in p.tasks] for q in p.sweep.p}, p.sweep.tau, p.tasks),
    }, []


def cores_of(plan: Plan, job: Job) -> Job:
    """The cores job `job` depends on (with training-seed replicates, each seed has its own)."""
    (cores,) = [plan.jobs[d] for d in job.deps if plan.jobs[d].kind == "cores"]
    return cores


def load_masks(ctx: StudyContext, plan: Plan, job: Job, tasks: list[str], shapes) -> dict[str, IndexMask]:
    """The saved core regions of `tasks` (from the cores job `job` depends on), as masks over parameters of
    these `shapes` (held as their indices)."""
    folder = ctx.store.job_dir(cores_of(plan, job).id) / MASKS
    return {t: IndexMask(load_file(str(folder / f"{t}.safetensors")), shapes) for t in tasks}


def _shapes(ctx: StudyContext) -> dict[str, Any]:
    """The base model's parameter shapes by name (what a stored core's indices are over)."""
    return {n: p.shape for n, p in ctx.base_model().named_parameters()}


def mt_train_job(ctx: StudyContext, plan: Plan, job: Job) -> JobOutput:
    """joint: one run on every task's data; multistage_*: the CPI groups as stages in that order, each
    stage on its tasks' data, no isolation; cpi: fusion, then the stages on a balanced sample of
    `cpi.calibration` examples per task, freezing every core of the earlier stages."""
    p: MtTrainJob = job.params
    settings, folder = p.train, ctx.store.job_dir(job.id)
    data = {t: ctx.examples(t, "train", settings.limit) for t in p.tasks}
    if p.method == "joint":
        seqs = _sequences(ctx, settings, list(data.items()))
        result = _train(ctx, job, seqs, settings, folder, tasks=p.tasks)
        return {"method": "joint", "stages": [p.tasks], **_out(result)}, []
    found = ctx.store.result(cores_of(plan, job).id)
    if p.method == "cpi":
        stages = stage_plan(found["jaccard"], found["tasks"], p.cpi.tau, p.seed).orders[p.cpi.order]
        return _cpi(ctx, plan, job, data, stages, folder)
    order = p.method.removeprefix("multistage_")
    stages = stage_plan(found["jaccard"], found["tasks"], p.tau, p.seed).orders[order]

    def stage(k: int, start: State | None) -> TrainResult:
        seqs = _sequences(ctx, settings, [(t, data[t]) for t in stages[k]])
        out = folder / f"stage-{k + 1}"
        return _train(ctx, job, seqs, settings, out, start, part=f" stage {k + 1}", tasks=stages[k])

    results = train_stages(len(stages), stage, lambda a: trained_state(ctx, a, settings))
    info = [
        {"stage": k + 1, "tasks": s, **_out(r)} for k, (s, r) in enumerate(zip(stages, results, strict=True))
    ]
    return _staged_result(p.method, stages, info), []


def _staged_result(method: str, stages: list[list[str]], info: list[dict]) -> dict[str, Any]:
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


def _cpi(
    ctx: StudyContext,
    plan: Plan,
    job: Job,
    data: dict[str, list[Example]],
    stages: list[list[str]],
    folder: Path,
) -> JobOutput:
    """CPI-FT: fuse the probes in stage order, then train the stages with the earlier cores frozen."""
    p: MtTrainJob = job.params
    cfg, settings = p.cpi, p.train
    order = [t for stage in stages for t in stage]
    init = initial_state(ctx, settings)
    artifacts = _probe_artifacts(ctx, plan, job)
    probes = [trained_state(ctx, artifacts[t], settings) for t in order]
    masks = load_masks(ctx, plan, job, order, _shapes(ctx))
    cores = [masks[t] for t in order]
    fused, stats = fuse_probes(init, probes, cores, cfg.fusion_base, cfg.omega, cfg.epsilon)
    start = folder / FUSED  # the first stage reads it tensor by tensor: not in memory while a stage trains
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in fused.items()}, str(start))
    del probes, fused
    sizes = {t: len(ex) for t, ex in data.items()}
    planned = cpi_stages(stages, masks, sizes, cfg.calibration, settings.seed)

    def stage(k: int, start: State | None) -> TrainResult:
        s = planned[k]
        parts = [(t, [data[t][i] for i in idx]) for t, idx in zip(s.tasks, s.picks, strict=True)]
        hooks = [FreezeHook(s.frozen)] if s.frozen else []
        seqs = _sequences(ctx, settings, parts)
        out = folder / f"stage-{k + 1}"
        return _train(ctx, job, seqs, settings, out, start, hooks, f" stage {k + 1}", tasks=s.tasks)

    try:
        results = train_stages(
            len(planned), stage, lambda a: trained_state(ctx, a, settings), FileState(start)
        )
    finally:
        start.unlink(missing_ok=True)
    info = [
        {
            "stage": k + 1,
            "tasks": s.tasks,
            "frozen": mask_size(s.frozen),
            **_out(r),
            "examples": sum(len(i) for i in s.picks),
        }
        for k, (s, r) in enumerate(zip(planned, results, strict=True))
    ]
    fusion = {
        "base": cfg.fusion_base,
        "base_task": order[-1] if cfg.fusion_base == "last_probe" else None,
        "tensors_slerp": stats.n_slerp,
        "tensors_lerp": stats.n_lerp,
        "collisions": stats.collisions,
        "transplanted": dict(zip(order, stats.transplanted, strict=True)),
    }
    return {**_staged_result("cpi", stages, info), "fusion": fusion}, []


def sequential_job(ctx: StudyContext, plan: Plan, job: Job) -> JobOutput:
    """Start from the first task's probe (= trained on A), train on B's data; `cpi`: A's core frozen."""
    p: SequentialJob = job.params
    a, b, settings = p.first, p.second, p.train
    start = trained_state(ctx, _probe_artifacts(ctx, plan, job)[a], settings)
    hooks, frozen = [], 0
    if p.method == "cpi":
        mask = load_masks(ctx, plan, job, [a], _shapes(ctx))[a]
        hooks, frozen = [FreezeHook(mask)], mask_size(mask)
    seqs = _sequences(ctx, settings, [(b, ctx.examples(b, "train", settings.limit))])
    result = _train(ctx, job, seqs, settings, ctx.store.job_dir(job.id), start, hooks, tasks=[b])
    return {"method": p.method, "first": a, "second": b, "frozen": frozen, **_out(result)}, []


HANDLERS = {"probe": probe_job, "cores": cores_job, "mt_train": mt_train_job, "sequential": sequential_job}
