"""A study on Ray (`spillover run STUDY.yaml --executor ray`): what each worker builds and what is checked
before the run. The scheduling itself is `engine.ray_executor.run_ray`; see docs/scaling.md."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from spillover.config import StudySpec
from spillover.data.tasks import TaskSpec
from spillover.engine.executors import Runner, RunSummary
from spillover.engine.plan import Job, Plan
from spillover.engine.ray_executor import RayOptions, StoreView, check_address, import_ray, run_ray
from spillover.engine.store import Store
from spillover.errors import SpilloverError
from spillover.studies import StudyKind

log = logging.getLogger(__name__)


def check_ray(spec: StudySpec, options: RayOptions) -> None:
    """Before anything is written: ray is installed, the address answers, the device fits the resources."""
    import_ray()
    check_address(options.address)
    if spec.device.startswith("cuda") and not options.gpus_per_job:
        raise SpilloverError(
            f"device = {spec.device!r}: a Ray worker sees no GPU unless --gpus-per-job is above 0; "
            "set --gpus-per-job (e.g. 1) or use device: auto"
        )


def run_study_on_ray(
    kind: StudyKind,
    spec: StudySpec,
    tasks: dict[str, TaskSpec],
    plan: Plan,
    store: Store,
    local_runner: Runner,
    on_job,
    options: RayOptions,
) -> RunSummary:
    """Training and evaluation jobs on Ray workers (one StudyContext each); the analysis here."""
    from spillover.models.load import EMBEDDED, ensure_embedded

    if spec.model == EMBEDDED:  # convert it once here, not in several workers at the same time
        ensure_embedded()
    factory = partial(study_worker, kind, spec, tasks, plan)
    return run_ray(plan, store, factory, local_runner, on_job, options)


def study_worker(
    kind: StudyKind, spec: StudySpec, tasks: dict[str, TaskSpec], plan: Plan, view: StoreView
) -> Runner:
    """Runs on a worker: one context (its base model loaded once) for every job the worker gets."""
    from transformers.utils import logging as hf_logging

    from spillover.studies.context import StudyContext
    from spillover.studies.run import dispatch

    hf_logging.disable_progress_bar()  # as the CLI does: Ray prints a worker's output on the driver
    hf_logging.set_verbosity_error()
    progress = LogProgress()
    ctx = StudyContext(spec, tasks, view, progress)

    def run(job: Job):
        progress.job = job.name
        return dispatch(kind, ctx, plan, job)

    return run


class LogProgress:
    """A worker's training progress as log lines (Ray prints them on the driver): about ten per job."""

    def __init__(self) -> None:
        self.job = ""

    def __call__(self, record: dict[str, Any]) -> None:
        step, total = record.get("step", 0), record.get("total_steps") or 0
        if total and (step == total or step % max(1, total // 10) == 0):
            log.info("%s: step %d/%d, loss %.4f", self.job, step, total, record.get("loss", float("nan")))
