"""A study on Ray (`spillover run STUDY.yaml --executor ray`): what is checked before the run and how each
worker is set up. The scheduling is the engine's (`engine.scheduler` with `engine.ray_executor`'s pool);
see docs/scaling.md. `studies.run` imports this module lazily, and this module never imports it: the
study's runner comes in as a factory."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from spillover.config import StudySpec
from spillover.engine.plan import Plan
from spillover.engine.ray_executor import RayOptions, StoreView, check_address, import_ray, run_ray
from spillover.engine.scheduler import OnJob, Runner, RunSummary
from spillover.engine.store import Store
from spillover.errors import SpilloverError

log = logging.getLogger(__name__)

# Builds the study's runner on a worker from its store view and a progress callback (picklable).
StudyRunnerFactory = Callable[[StoreView, Callable[[dict], None]], Runner]


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
    spec: StudySpec,
    plan: Plan,
    store: Store,
    make_runner: StudyRunnerFactory,
    local_runner: Runner,
    on_job: OnJob | None,
    options: RayOptions,
) -> RunSummary:
    """Training and evaluation jobs on Ray workers (one runner built by `make_runner` each); the analysis
    here with `local_runner`."""
    from spillover.models.load import EMBEDDED, ensure_embedded

    if spec.model == EMBEDDED:  # convert it once here, not in several workers at the same time
        ensure_embedded()
    return run_ray(plan, store, partial(worker_runner, make_runner), local_runner, on_job, options)


def worker_runner(make_runner: StudyRunnerFactory, view: StoreView) -> Runner:
    """Runs on a worker: quiet library output, progress as log lines, one runner for all its jobs."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # as the CLI does: Ray prints a worker's output on the driver
    hf_logging.set_verbosity_error()
    progress = LogProgress()
    runner = make_runner(view, progress)

    def run(job):
        progress.job = job.name
        return runner(job)

    return run


class LogProgress:
    """A worker's training progress as log lines (Ray prints them on the driver): about ten per job."""

    def __init__(self) -> None:
        self.job = ""

    def __call__(self, record: dict[str, Any]) -> None:
        step, total = record.get("step", 0), record.get("total_steps") or 0
        if total and (step == total or step % max(1, total // 10) == 0):
            log.info("%s: step %d/%d, loss %.4f", self.job, step, total, record.get("loss", float("nan")))
