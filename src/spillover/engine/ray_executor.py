"""Run a plan's jobs on a Ray cluster: independent jobs in parallel, each on a worker with its resources.

Semantics are `run_local`'s: finished jobs are skipped, a failed job blocks its dependents (left pending),
summary jobs (`analyse`) run even with failed inputs and are then recorded as failed, and the same
`RunSummary` and `on_job` events come back. What differs is where the work happens:

  driver (the `spillover run` process)  the only writer of `results.db`: marks jobs running/done/failed,
                                        runs summary jobs itself (they read the whole store), and hands
                                        every other job whose dependencies are done to a free worker.
  workers (Ray actors)                  one per `cpus_per_job`/`gpus_per_job` slot of the cluster; each
                                        builds its runner once (a study keeps its base model loaded across
                                        jobs), runs one job at a time, writes its artifacts into
                                        `<output dir>/jobs/<id>/` and returns the result and score rows.

Like `run_local`, the driver claims each job in the store before it starts it (and keeps its claims alive
with a heartbeat), so a Ray run and other runs on the same folder share the work: a job another live
executor holds is left to it, and its dependents wait until it is done there.

Workers read and write the output folder by its path, so on a multi-node cluster it must be on a
filesystem shared by every node; a worker that cannot see it stops the run with a clear error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sqlite3
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from spillover.atomic import atomic_write_text
from spillover.engine.executors import (
    JOB_ERRORS,
    POLL_S,
    SUMMARY_KINDS,
    Runner,
    RunSummary,
    announce_waits,
    failure_detail,
    partial_result,
)
from spillover.engine.plan import Job, Plan
from spillover.engine.store import Heartbeat, Store
from spillover.errors import SpilloverError

log = logging.getLogger(__name__)
INSTALL = "pip install 'spillover[ray]'"
MARKER = ".ray-session"  # written by the driver into the output folder; each worker must read it back
# the driver's settings every worker must share, also on other nodes (the tracking server)
FORWARDED_ENV = ("MLFLOW_TRACKING_URI",)


class RayOptions(BaseModel):
    """`--executor ray` settings. `address`: an existing cluster (`host:port`, `auto` or `ray://host:port`);
    None does what `ray.init()` does (join RAY_ADDRESS or this machine's `ray start` instance, else start a
    local one). Each job gets `cpus_per_job` CPUs (its torch threads) and `gpus_per_job` GPUs (fractions
    share a GPU)."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(default=None, min_length=1)
    cpus_per_job: int = Field(default=1, ge=1)
    gpus_per_job: float = Field(default=0.0, ge=0)


class StoreView:
    """What a job sees of the store on a worker: its artifact folder and its dependencies' results
    (read-only; the driver alone writes `results.db`, so SQLite never runs on a shared filesystem)."""

    job_dir = Store.job_dir

    def __init__(self, root: str | Path, results: dict[str, dict[str, Any]] | None = None) -> None:
        self.root = Path(root)
        self.results = results or {}

    def result(self, job_id: str) -> dict[str, Any]:
        if job_id not in self.results:
            raise KeyError(f"job {job_id} has no result here (a worker only sees its job's dependencies)")
        return self.results[job_id]


# A worker's runner factory: called once per worker with its StoreView; must be picklable (cloudpickle).
RunnerFactory = Callable[[StoreView], Runner]


def attempt(runner: Runner, job: Job) -> tuple[str, Any, Any]:
    """("done", result, scores) or ("failed", detail for the store, one-line reason), like `run_local`."""
    try:
        result, scores = runner(job)
    except JOB_ERRORS as e:
        return "failed", failure_detail(e), str(e)
    return "done", result, scores


def check_visible(root: str | Path, token: str) -> str | None:
    """None when this process sees the driver's output folder (the marker holds `token`), else why not."""
    marker = Path(root) / MARKER
    try:
        if marker.read_text() == token:
            return None
        seen = "holds another run's marker"
    except OSError as e:
        seen = f"cannot be read ({e.strerror or e})"
    return (
        f"a Ray worker on {socket.gethostname()} cannot see the output folder {root} ({marker} {seen}); "
        "on a multi-node cluster the output folder must be on a filesystem shared by every node"
    )


class Worker:
    """The body of a Ray actor: one runner (one loaded base model), one job at a time."""

    def __init__(self, make_runner: RunnerFactory, root: str, token: str, threads: int) -> None:
        os.environ["OMP_NUM_THREADS"] = str(threads)  # torch's thread count when the runner imports it
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        self.make_runner, self.view, self.token, self.threads = make_runner, StoreView(root), token, threads
        self.runner: Runner | None = None

    def run(self, job: Job, dep_results: dict[str, dict[str, Any]]) -> tuple[str, Any, Any]:
        if self.runner is None:
            problem = check_visible(self.view.root, self.token)
            if problem:
                return "unreachable", problem, problem
            self.runner = self.make_runner(self.view)
        if "torch" in sys.modules:  # and whatever a job may have changed it to
            sys.modules["torch"].set_num_threads(self.threads)
        self.view.results = dep_results
        return attempt(self.runner, job)


def import_ray():
    try:
        import ray
    except ImportError:
        raise SpilloverError(f"--executor ray needs the ray package: {INSTALL}") from None
    return ray


def connect(ray, address: str | None) -> bool:
    """Join the cluster at `address` (None: as `ray.init()`) unless Ray is already initialised in this
    process. Returns whether this call connected (and so should disconnect)."""
    if ray.is_initialized():
        return False
    check_address(address)
    try:
        with warnings.catch_warnings():  # Ray's notice about a future change to GPU env vars
            warnings.filterwarnings(
                "ignore", message="Tip: In future versions of Ray", category=FutureWarning
            )
            ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as e:
        where = f"at --address {address}" if address else "locally"
        raise SpilloverError(f"cannot start or join a Ray cluster {where}: {e}") from None
    return True


def check_address(address: str | None) -> None:
    """A `host:port` nobody answers on fails here in seconds (Ray itself retries for minutes). `auto` and
    `ray://` addresses are left to Ray, which fails fast or within 30 s there."""
    if not address or address == "auto" or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise SpilloverError(f"--address {address}: expected host:port, auto or ray://host:port")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as e:
        raise SpilloverError(
            f"--address {address}: no Ray cluster answers there ({e.strerror or e}); start one with "
            "`ray start --head` on the head node, or leave out --address to run a local one"
        ) from None


def worker_slots(nodes: list[dict[str, Any]], options: RayOptions) -> int:
    """How many workers fit on the cluster's live nodes (`ray.nodes()`) with each job's resources."""
    slots = 0
    for node in nodes:
        if not node.get("Alive"):
            continue
        have = node.get("Resources", {})
        fits = int(have.get("CPU", 0) // options.cpus_per_job)
        if options.gpus_per_job:
            fits = min(fits, int(have.get("GPU", 0) // options.gpus_per_job))
        slots += fits
    if not slots:
        sizes = ", ".join(
            f"{n.get('NodeManagerAddress', '?')}: {n['Resources'].get('CPU', 0):g} CPUs, "
            f"{n['Resources'].get('GPU', 0):g} GPUs"
            for n in nodes
            if n.get("Alive")
        )
        raise SpilloverError(
            f"no node of the Ray cluster has room for one job with --cpus-per-job {options.cpus_per_job} "
            f"and --gpus-per-job {options.gpus_per_job:g} (nodes: {sizes or 'none alive'})"
        )
    return slots


def run_ray(
    plan: Plan,
    store: Store,
    make_runner: RunnerFactory,
    local_runner: Runner,
    on_job: Callable[[Job, str], None] | None = None,
    options: RayOptions | None = None,
) -> RunSummary:
    """Run every unfinished job of `plan` on Ray workers built by `make_runner`; summary jobs run here
    with `local_runner`. Connects with `options.address` unless Ray is already initialised."""
    options = options or RayOptions()
    ray = import_ray()
    todo = [job for job in plan if store.status(job.id) != "done"]
    n_remote = sum(job.kind not in SUMMARY_KINDS for job in todo)
    connected = connect(ray, options.address) if n_remote else False
    pool = None
    try:
        pool = _Pool(ray, make_runner, store.root, options, n_remote) if n_remote else None
        return _Scheduler(plan, store, pool, local_runner, on_job).run()
    finally:
        if pool is not None:
            pool.close()
        if connected:
            ray.shutdown()


class _Pool:
    """The workers: started lazily up to the cluster's slots, replaced when one dies."""

    def __init__(self, ray, make_runner: RunnerFactory, root: Path, options: RayOptions, n_jobs: int) -> None:
        self.ray, self.options = ray, options
        self.size = min(n_jobs, worker_slots(ray.nodes(), options))
        self.token = uuid.uuid4().hex
        atomic_write_text(Path(root) / MARKER, self.token)
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        self._actor = ray.remote(Worker).options(
            num_cpus=options.cpus_per_job,
            num_gpus=options.gpus_per_job,
            runtime_env={"env_vars": env} if env else None,
        )
        self._args = (make_runner, str(Path(root).resolve()), self.token, options.cpus_per_job)
        self.idle: list[Any] = []
        self.workers: list[Any] = []
        log.info(
            "Ray: up to %d workers with %d CPUs, %g GPUs each",
            self.size,
            options.cpus_per_job,
            options.gpus_per_job,
        )

    def take(self):
        """A free worker, or None when all are busy."""
        if self.idle:
            return self.idle.pop()
        if len(self.workers) < self.size:
            self.workers.append(self._actor.remote(*self._args))
            return self.workers[-1]
        return None

    def give_back(self, worker) -> None:
        self.idle.append(worker)

    def replace(self, worker) -> None:
        """A worker died: drop it; the next `take` starts a fresh one in its place."""
        self.ray.kill(worker, no_restart=True)
        self.workers.remove(worker)

    def close(self) -> None:
        """Stop every worker now (also those still running a job, when the run stops on an error), so a
        long-lived cluster gets their resources back at once."""
        for worker in self.workers:
            self.ray.kill(worker, no_restart=True)
        self.workers, self.idle = [], []


class _Scheduler:
    """The driver loop: settle what needs no worker, hand ready jobs to free workers, record each outcome."""

    def __init__(
        self,
        plan: Plan,
        store: Store,
        pool: _Pool | None,
        local_runner: Runner,
        on_job: Callable[[Job, str], None] | None,
    ) -> None:
        self.plan, self.store, self.pool = plan, store, pool
        self.local_runner, self.on_job = local_runner, on_job
        self.summary = RunSummary()
        self.settled: set[str] = set()
        self.bad: set[str] = set()
        self.running: dict[Any, tuple[Job, Any]] = {}  # object ref -> (job, worker)

    def run(self, poll: float = POLL_S) -> RunSummary:
        todo, announced = list(self.plan), set()
        with Heartbeat(self.store.root):
            try:
                while todo or self.running:
                    todo = self._start_ready(todo)
                    if self.running:
                        self._collect_one()
                    elif todo:  # every job left is held by another executor or waits on one that is
                        announce_waits(todo, self.store, announced)
                        time.sleep(poll)
            except BaseException:  # stopped (an error, Ctrl-C in a session that lives on): nobody may wait
                for job, _ in self.running.values():  # on the claims of the jobs left unfinished
                    with contextlib.suppress(sqlite3.Error):
                        self.store.release(job)
                raise
        return self.summary

    def _start_ready(self, todo: list[Job]) -> list[Job]:
        """Block, run (summaries) or submit every job whose dependencies are settled, until nothing more
        can start; returns the jobs still waiting."""
        while True:
            waiting = self._pass(todo)
            if not waiting or len(waiting) == len(todo):
                return waiting
            todo = waiting

    def _pass(self, todo: list[Job]) -> list[Job]:
        waiting = []
        for job in todo:
            if self.store.status(job.id) == "done":  # before this run, or meanwhile by another executor
                self.summary.skipped.append(job.id)
                self.settled.add(job.id)
                continue
            if not all(d in self.settled for d in job.deps):
                waiting.append(job)
                continue
            n_bad = sum(d in self.bad for d in job.deps)
            if n_bad and job.kind not in SUMMARY_KINDS:
                self._settle(job, ok=False)
                self.summary.blocked.append(job.id)
                self._notify(job, "blocked")
            elif job.kind in SUMMARY_KINDS:
                if self._claim(job):
                    self._record(job, attempt(self.local_runner, job), n_bad)
                else:
                    waiting.append(job)
            elif not self._submit(job):
                waiting.append(job)
        return waiting

    def _submit(self, job: Job) -> bool:
        worker = self.pool.take()
        if worker is None:
            return False
        if not self._claim(job):
            self.pool.give_back(worker)
            return False
        deps = {d: self.store.result(d) for d in job.deps}
        self.running[worker.run.remote(job, deps)] = (job, worker)
        return True

    def _collect_one(self) -> None:
        ray = self.pool.ray
        (ref,), _ = ray.wait(list(self.running), num_returns=1)
        job, worker = self.running.pop(ref)
        try:
            outcome = ray.get(ref)
        except ray.exceptions.RayActorError as e:  # the worker process died (out of memory, node lost)
            self.pool.replace(worker)
            why = f"the Ray worker running it died: {e}"
            return self._record(job, ("failed", why, why.splitlines()[0]), 0)
        if outcome[0] == "unreachable":
            self.store.release(job)  # not run: give it back like the jobs still in flight
            raise SpilloverError(outcome[1])
        self.pool.give_back(worker)
        self._record(job, outcome, 0)

    def _claim(self, job: Job) -> bool:
        """Claim `job` for this run (False: another live executor holds it) and announce its start."""
        if not self.store.claim(job):
            return False
        self._notify(job, "start")
        return True

    def _record(self, job: Job, outcome: tuple[str, Any, Any], n_bad: int) -> None:
        status, detail, reason = outcome
        if status == "done" and n_bad:
            status = "failed"
            detail = reason = partial_result(job, n_bad)
        if status == "done":
            self.store.mark_done(job, detail, reason)
            self.summary.done.append(job.id)
        else:
            log.error("job %s (%s) failed: %s", job.name, job.id, reason)
            self.store.mark_failed(job, detail)
            self.summary.failed[job.id] = reason
        self._settle(job, ok=status == "done")
        self._notify(job, status)

    def _settle(self, job: Job, ok: bool) -> None:
        self.settled.add(job.id)
        if not ok:
            self.bad.add(job.id)

    def _notify(self, job: Job, event: str) -> None:
        if self.on_job is not None:
            self.on_job(job, event)
