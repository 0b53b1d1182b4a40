"""Run a study: load + validate its YAML, plan, execute (skipping finished jobs), analyse, report.

spillover run studies/quickstart.yaml [--out DIR] [key=value ...]
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from spillover.atomic import atomic_write_text, exclusive
from spillover.config import StudySpec, apply_overrides, dump_spec, resolve_named
from spillover.data.tasks import TaskSpec, load_examples, resolve_tasks
from spillover.engine.executors import EXECUTORS, run_local
from spillover.engine.plan import Job, Plan, content_hash, file_fingerprint
from spillover.engine.ray_executor import RayOptions
from spillover.engine.scheduler import Runner, RunSummary
from spillover.engine.store import Store
from spillover.engine.tracking import check_report_to
from spillover.errors import SpilloverError, unknown_name_message
from spillover.harness.tasks import LmEvalTarget, fingerprint, is_lm_eval_name
from spillover.memory import release_free_memory
from spillover.studies import STUDIES
from spillover.studies.context import StudyContext
from spillover.studies.contract import StudyKind, build_study_plan, handler_for, report_job
from spillover.studies.pruning import prune_done, restore_needed
from spillover.yamlio import load_yaml, validate

log = logging.getLogger(__name__)
SPEC_FILE = "study.yaml"
# Held while writing the study's shared outputs (study.yaml, tables/, report.html): concurrent runs and
# re-renders on one folder take turns, so their atomic writes never interleave.
OUTPUTS_LOCK = ".outputs.lock"


def load_study(
    path: str | Path, overrides: list[str] = (), out: str | None = None
) -> tuple[StudyKind, StudySpec]:
    """Parse and validate a study YAML (relative `tasks_file` resolves against the YAML's folder)."""
    path = Path(path)
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise SpilloverError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    data = apply_overrides(data, list(overrides), str(path))
    if out is not None:
        data["output_dir"] = out
    if "study" not in data:
        raise SpilloverError(f"{path}: missing required key 'study'; allowed kinds: {', '.join(STUDIES)}")
    try:
        kind = STUDIES.get(str(data["study"]))()
    except SpilloverError as e:
        raise SpilloverError(f"{path}: study = {data['study']!r}: {e}") from None
    if isinstance(data.get("tasks_file"), str) and data["tasks_file"]:
        data["tasks_file"] = _relative_to(path, data["tasks_file"])
    if isinstance(data.get("lm_eval_include"), list):
        data["lm_eval_include"] = [
            _relative_to(path, d) if isinstance(d, str) and d else d for d in data["lm_eval_include"]
        ]
    return kind, validate(kind.spec, data, str(path))


def _relative_to(study: Path, entry: str) -> str:
    """A path written in a study YAML: absolute as it is, else relative to the YAML's folder."""
    return entry if Path(entry).is_absolute() else str((study.parent / entry).resolve())


def task_fingerprints(tasks: dict[str, TaskSpec | LmEvalTarget]) -> dict[str, dict[str, str]]:
    """Content hashes of each task's spec and data files: a changed row re-runs what depends on it. An
    lm-eval target: its config and lm-eval's version (`spec`), its evaluation documents (`test`)."""
    out = {}
    for name, t in tasks.items():
        if isinstance(t, LmEvalTarget):
            out[name] = {part: content_hash(v) for part, v in fingerprint(t).items()}
            continue
        fp = {"spec": content_hash(t.model_dump(mode="json"))}

        for split in ("train", "test"):
            src = getattr(t, split)
            if src is None:
                continue
            path = Path(src) if Path(src).is_absolute() else t.base_dir / src
            fp[split] = src if src.startswith("hf:") else file_fingerprint(path)
        out[name] = fp
    return out


def prepare(kind: StudyKind, spec: StudySpec) -> tuple[dict[str, TaskSpec], Plan]:
    """Resolve tasks, check every input, and build the plan — all before anything is written."""
    check_model(spec.model, spec.precision, spec.device)
    check_lm_eval_names(spec)
    tasks = {t.name: t for t in resolve_tasks(spec.task_names(), spec.tasks_file, spec.lm_eval_include)}
    kind.check(spec, tasks, lambda name, split, limit: load_examples(tasks[name], split, limit))
    tasks |= probed_tasks(spec, tasks)
    return tasks, build_study_plan(kind, spec, task_fingerprints(tasks))


def check_lm_eval_names(spec: StudySpec) -> None:
    """`lm_eval:TASK` names only where the kind evaluates without training (`StudySpec.lm_eval_targets`)."""
    allowed = set(spec.lm_eval_targets())
    misplaced = [n for n in spec.task_names() if is_lm_eval_name(n) and n not in allowed]
    if misplaced:
        where = (
            "only in `targets`" if allowed else f"not in a {spec.study} study (the transfer study's targets)"
        )
        raise SpilloverError(
            f"{misplaced[0]}: an lm-eval task is a target only (evaluated, never trained on or probed): "
            f"allowed {where}"
        )


def probed_tasks(spec: StudySpec, tasks: dict[str, TaskSpec]) -> dict[str, TaskSpec]:
    """With `train.eval_every`: the tasks probed during training resolved — `train.eval_tasks`, else every
    training job's own tasks (any of the study's tasks with a train split) — and their probe rows (the first
    `eval.limit` test rows) read and checked. Returns the probed tasks that are not study tasks."""
    if spec.train.eval_every is None:
        return {}
    harness = [n for n in spec.train.eval_tasks if is_lm_eval_name(n)]
    if harness:
        raise SpilloverError(
            f"train.eval_tasks: {harness[0]} is an lm-eval task; probes during training take spillover tasks "
            "(their validation loss needs the task's target text): evaluate it as a study target instead"
        )
    extra = [n for n in spec.train.eval_tasks if n not in tasks]
    found = {t.name: t for t in resolve_named("train.eval_tasks", extra, spec.tasks_file)}
    probed = spec.train.eval_tasks or [n for n, t in tasks.items() if t.train is not None]
    for name in probed:
        task = found.get(name) or tasks[name]
        if task.test is None:
            raise SpilloverError(
                f"train.eval_every probes task '{name}' during training, but it has no test split (set "
                "`test:` in its spec, or list the tasks to probe in train.eval_tasks)"
            )
        load_examples(task, "test", spec.eval.limit)
    return found


def check_model(model: str, precision: str, device: str) -> None:
    """The model name resolves (a local folder exists) and the device is usable; loads nothing."""
    from spillover.models.load import EMBEDDED, resolve_model_path, resolve_precision

    resolve_precision(precision, device)
    if model != EMBEDDED:  # the embedded model is converted on first use, in the first job that needs it
        resolve_model_path(model)


def run_study(
    kind: StudyKind,
    spec: StudySpec,
    progress: Callable[[dict], None] | None = None,
    on_job: Callable[[Job, str], None] | None = None,
    executor: str = "local",
    ray: RayOptions | None = None,
    on_start: Callable[[Plan, set[str]], None] | None = None,
) -> tuple[RunSummary, Path]:
    """`executor`: local (this process, jobs in plan order) or ray (`ray`: its options; docs/scaling.md).
    `on_start(plan, done_ids)`: called once the plan is built, with the ids an earlier run finished
    (`progress.StudyProgress.start`); `on_job(job, event)` per start / done / failed / blocked;
    `progress(event)` per optimiser step of a training job."""
    check_report_to(spec.report_to, spec.output_dir)
    ray = check_executor(executor, ray, spec)
    tasks, plan = prepare(kind, spec)
    out = Path(spec.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with exclusive(out / OUTPUTS_LOCK):
        atomic_write_text(out / SPEC_FILE, dump_spec(spec))
    store = Store(out)
    try:
        if on_start is not None:
            on_start(plan, {j["id"] for j in store.jobs() if j["status"] == "done"})
        if not spec.keep_models:
            restore_needed(plan, store)
            on_job = _pruning(plan, store, on_job)
        runner = study_runner(kind, spec, tasks, plan, store, progress)
        if executor == "ray":  # Ray glue imported only here; it never imports this module
            from spillover.studies.ray_run import run_study_on_ray

            on_worker = partial(study_runner, kind, spec, tasks, plan)  # pickled to each Ray worker
            summary = run_study_on_ray(spec, plan, store, on_worker, runner, on_job, ray)
        else:
            summary = run_local(plan, store, runner, on_job)
        if not spec.keep_models:  # also what another run on the folder finished meanwhile
            prune_done(plan, store, list(plan))
    finally:
        store.close()
    return summary, out


def _pruning(
    plan: Plan, store: Store, on_job: Callable[[Job, str], None] | None
) -> Callable[[Job, str], None]:
    """`on_job` that also prunes the models a finished job was the last to need (studies/pruning.py)."""

    def event(job: Job, what: str) -> None:
        if what == "done":
            prune_done(plan, store, [plan.jobs[d] for d in job.deps] + [job])
        if on_job is not None:
            on_job(job, what)

    return event


def check_executor(executor: str, ray: RayOptions | None, spec: StudySpec) -> RayOptions | None:
    """The executor exists and can run this study (ray: installed, resources fit the device)."""
    if executor not in EXECUTORS:
        raise SpilloverError(unknown_name_message("executor", str(executor), EXECUTORS))
    if executor != "ray":
        if ray is not None:
            raise SpilloverError(f"Ray options ({ray}) need executor 'ray', got {executor!r}")
        return None
    from spillover.studies.ray_run import check_ray

    ray = ray or RayOptions()
    check_ray(spec, ray)
    return ray


def study_runner(
    kind: StudyKind,
    spec: StudySpec,
    tasks: dict[str, TaskSpec],
    plan: Plan,
    store,
    progress: Callable[[dict], None] | None = None,
) -> Runner:
    """What runs the study's jobs in one process: one context (its base model loaded once) for every job
    handed to it. `store`: the Store, or on a Ray worker its read-only view (`ray_executor.StoreView`)."""
    return partial(dispatch, kind, StudyContext(spec, tasks, store, progress), plan)


def dispatch(kind: StudyKind, ctx: StudyContext, plan: Plan, job: Job) -> tuple[dict[str, Any], list[dict]]:
    """Run one job with the study's context: the kind's own handler, else the shared one (studies/jobs.py);
    `analyse` writes the study's shared outputs, one writer at a time."""
    try:
        if job.kind == "analyse":
            with exclusive(Path(ctx.spec.output_dir) / OUTPUTS_LOCK):
                return report_job(kind, ctx, plan, job), []
        return handler_for(kind, job.kind)(ctx, plan, job)
    finally:
        release_free_memory()  # what the job freed goes back to the OS before the next one


def rerender_report(out: str | Path) -> Path:
    """Re-run the analysis over the stored results of the study in `out` (no training, no evaluation); a
    `spillover train` folder with evaluation curves (`eval_every`) gets its report.html re-rendered."""
    out = Path(out)
    if not (out / SPEC_FILE).exists() and (out / "eval_curves.csv").exists():
        from spillover.api import write_train_report

        return write_train_report(out)
    kind, spec = saved_study(out)
    tasks, plan = prepare(kind, spec)
    store = Store(out)
    try:
        (job,) = plan.by_kind("analyse")
        with exclusive(out / OUTPUTS_LOCK):
            report_job(kind, StudyContext(spec, tasks, store), plan, job)
    finally:
        store.close()
    return out / "report.html"


def saved_study(out: Path) -> tuple[StudyKind, StudySpec]:
    if not (out / SPEC_FILE).exists():
        raise SpilloverError(
            f"{out} is not a study folder (no {SPEC_FILE}); run `spillover run STUDY.yaml` first"
        )
    return load_study(out / SPEC_FILE, out=str(out))


def study_status(out: str | Path) -> list[dict[str, Any]]:
    """Every planned job of the study in `out` with its status (done / failed / running / pending)."""
    out = Path(out)
    kind, spec = saved_study(out)
    _, plan = prepare(kind, spec)
    store = Store(out)
    try:
        known = {j["id"]: j for j in store.jobs()}
    finally:
        store.close()
    rows = []
    for job in plan:
        rec = known.get(job.id, {})
        rows.append(
            {
                "id": job.id,
                "kind": job.kind,
                "name": job.name,
                "status": rec.get("status") or "pending",
                "seconds": (rec["finished"] - rec["started"])
                if rec.get("finished") and rec.get("started")
                else None,
                "error": rec.get("error"),
            }
        )
    return rows
