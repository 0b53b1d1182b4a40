"""Run a plan's jobs on a Ray cluster: independent jobs in parallel, each on a worker with its resources.

The rules are the one scheduler's (`engine.scheduler`), as for `run_local`: finished jobs are skipped, a
failed job blocks its dependents (left pending), summary jobs (`analyse`) run even with failed inputs and
are then recorded as failed, each job is claimed in the store before it starts, and the same `RunSummary`
and `on_job` events come back. This module supplies the scheduler's Ray worker pool:

  driver (the `spillover run` process)  runs the scheduler: the only writer of `results.db` (claims,
                                        marks done/failed, keeps its claims alive with a heartbeat); runs
                                        summary jobs itself (they read the whole store) on an in-process
                                        pool, and hands every other ready job to a free worker.
  workers (Ray actors)                  one per `cpus_per_job`/`gpus_per_job` slot of the cluster; each
                                        builds its runner once (a study keeps its base model loaded across
                                        jobs), runs one job at a time, writes its artifacts into
                                        `<output dir>/jobs/<id>/` and returns the result and score rows.

Workers read and write the output folder by its path, so on a multi-node cluster it must be on a
filesystem shared by every node; a worker that cannot see it stops the run with a clear error.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from spillover.atomic import atomic_write_text
from spillover.engine.executors import InProcessPool
from spillover.engine.plan import Job, Plan
from spillover.engine.scheduler import SUMMARY_KINDS, OnJob, Outcome, Runner, RunSummary, attempt, schedule
from spillover.engine.store import Store
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

    def run(self, job: Job, dep_results: dict[str, dict[str, Any]]) -> Outcome:
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
    on_job: OnJob | None = None,
    options: RayOptions | None = None,
) -> RunSummary:
    """Run every unfinished job of `plan` on Ray workers built by `make_runner`; summary jobs run here
    with `local_runner`. Connects with `options.address` unless Ray is already initialised; starts no
    worker (and does not connect) when only summary jobs are left."""
    options = options or RayOptions()
    ray = import_ray()
    here = InProcessPool(local_runner)
    n_remote = sum(job.kind not in SUMMARY_KINDS and store.status(job.id) != "done" for job in plan)
    if not n_remote:
        return schedule(plan, store, here, on_job=on_job)
    connected = connect(ray, options.address)
    pool = None
    try:
        pool = RayPool(ray, make_runner, store.root, options, n_remote)
        return schedule(plan, store, pool, here, on_job)
    finally:
        if pool is not None:
            pool.close()
        if connected:
            ray.shutdown()


class RayPool:
    """The scheduler's Ray worker pool: actors started lazily up to the cluster's slots (never more than
    jobs), one job each at a time, replaced when one dies."""

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
        self.running: dict[Any, tuple[Job, Any]] = {}  # object ref -> (job, worker)
        log.info(
            "Ray: up to %d workers with %d CPUs, %g GPUs each",
            self.size,
            options.cpus_per_job,
            options.gpus_per_job,
        )

    def has_room(self) -> bool:
        return bool(self.idle) or len(self.workers) < self.size

    def busy(self) -> bool:
        return bool(self.running)

    def submit(self, job: Job, inputs: dict[str, dict[str, Any]]) -> None:
        if self.idle:
            worker = self.idle.pop()
        else:
            assert len(self.workers) < self.size, "submit only when has_room()"
            worker = self._actor.remote(*self._args)
            self.workers.append(worker)
        self.running[worker.run.remote(job, inputs)] = (job, worker)

    def collect(self) -> tuple[Job, Outcome]:
        """The next job to end on any worker. A worker that died fails its job and is replaced; one that
        cannot see the output folder stops the run (SpilloverError)."""
        (ref,), _ = self.ray.wait(list(self.running), num_returns=1)
        job, worker = self.running.pop(ref)
        try:
            outcome = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as e:  # the worker process died (out of memory, node lost)
            self._drop(worker)
            why = f"the Ray worker running it died: {e}"
            return job, ("failed", why, why.splitlines()[0])
        if outcome[0] == "unreachable":
            raise SpilloverError(outcome[1])
        self.idle.append(worker)
        return job, outcome

    def _drop(self, worker) -> None:
        """Kill a dead worker for good; the next `submit` starts a fresh one in its place."""
        self.ray.kill(worker, no_restart=True)
        self.workers.remove(worker)

    def close(self) -> None:
        """Stop every worker now (also those still running a job, when the run stops on an error), so a
        long-lived cluster gets their resources back at once."""
        for worker in self.workers:
            self.ray.kill(worker, no_restart=True)
        self.workers, self.idle, self.running = [], [], {}
