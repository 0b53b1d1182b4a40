"""The one scheduler: it alone decides, for every job of a plan, skip / block / claim / run / record.

    skip     the store has the job `done` (from an earlier run, or meanwhile from another run on the folder)
    block    a dependency failed or was blocked: reported `blocked`, left pending so a re-run picks it up.
             Summary jobs (`SUMMARY_KINDS`, e.g. `analyse`) are not blocked: they run over whatever
             finished (a partial report beats none) and are then recorded failed, so the next run redoes them
    claim    `Store.claim` takes the job for this process before it runs; a job another live run holds is
             left to it, and its dependents wait until it is done there (or failed, or its owner died)
    run      the job is handed to a worker pool, which only executes it and returns its outcome
    record   `mark_done` (result + scores in one commit, the last thing a job does) or `mark_failed`; when
             the run stops (an error, Ctrl-C in a session that lives on) the claims of the jobs still in
             flight are released, so nobody waits on them

Worker pools (`Pool`) are where jobs execute: `executors.InProcessPool` (this process, one job at a time)
and `ray_executor.RayPool` (Ray actors). A pool returns ("done", result, scores) or ("failed", detail for
the store, one-line reason); it never touches the store's statuses. `run_local` and `run_ray` are this
scheduler with one pool or the other.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from spillover.engine.plan import Job, Plan
from spillover.engine.store import Heartbeat, Store
from spillover.errors import SpilloverError

log = logging.getLogger(__name__)

# Jobs that summarise others run even when some inputs failed (a partial report beats none), but are then
# recorded as failed so the next run, after the inputs are fixed, redoes them.
SUMMARY_KINDS = frozenset({"analyse"})

# The exceptions a job's failure is recorded for (the study goes on); anything else is a bug and stops the run.
JOB_ERRORS = (SpilloverError, RuntimeError, ValueError, OSError, KeyError, AssertionError)

POLL_S = 0.5  # seconds between looks at the store while every remaining job waits on another run

# A job runner returns (result, score rows) for the store.
Runner = Callable[[Job], tuple[dict[str, Any], list[dict[str, Any]]]]
# ("done", result, score rows) or ("failed", detail for the store, one-line reason)
Outcome = tuple[str, Any, Any]
OnJob = Callable[[Job, str], None]  # events: start, done, failed, blocked


class Pool(Protocol):
    """Where jobs execute. The scheduler hands a job over only when `has_room()`, already claimed."""

    def has_room(self) -> bool: ...

    def busy(self) -> bool:
        """Whether a handed-over job has not been collected yet."""

    def submit(self, job: Job, inputs: dict[str, dict[str, Any]]) -> None:
        """Start `job`; `inputs`: the results of its dependencies that are done."""

    def collect(self) -> tuple[Job, Outcome]:
        """Wait for one handed-over job to end; its outcome."""


@dataclass
class RunSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    blocked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked


def attempt(runner: Runner, job: Job) -> Outcome:
    """Run `job`: ("done", result, scores), or ("failed", detail, reason) for a job error (`JOB_ERRORS`);
    anything else (a bug, Ctrl-C) propagates."""
    try:
        result, scores = runner(job)
    except JOB_ERRORS as e:
        return "failed", failure_detail(e), str(e)
    return "done", result, scores


def failure_detail(e: BaseException) -> str:
    """What the store records for a failed job (call inside the `except`): a person's message for a
    SpilloverError, else the traceback — not swallowed: `spillover status` shows it."""
    return str(e) if isinstance(e, SpilloverError) else traceback.format_exc(limit=8)


def partial_result(job: Job, n_bad: int) -> str:
    """Why a summary job that ran with `n_bad` failed or blocked inputs is recorded as failed."""
    return f"partial result: {n_bad} of its {len(job.deps)} inputs failed or were blocked"


def schedule(
    plan: Plan,
    store: Store,
    pool: Pool,
    summary_pool: Pool | None = None,
    on_job: OnJob | None = None,
    poll: float = POLL_S,
) -> RunSummary:
    """Run every unfinished job of `plan` on `pool` (summary jobs on `summary_pool`, default `pool`),
    recording each in `store`. Failures are recorded and independent jobs still run; a job another live
    run holds is waited for, polling every `poll` seconds."""
    return _Scheduler(plan, store, pool, summary_pool or pool, on_job).run(poll)


class _Scheduler:
    def __init__(self, plan: Plan, store: Store, pool: Pool, summary_pool: Pool, on_job: OnJob | None):
        self.plan, self.store, self.on_job = plan, store, on_job
        self.pool, self.summary_pool = pool, summary_pool
        self.pools = [pool] if summary_pool is pool else [summary_pool, pool]  # summaries collected first
        self.summary = RunSummary()
        self.settled: set[str] = set()  # done, or attempted / blocked by this run
        self.bad: set[str] = set()  # failed or blocked
        self.in_flight: dict[str, tuple[Job, int]] = {}  # claimed, not recorded: id -> (job, n bad inputs)

    def run(self, poll: float) -> RunSummary:
        todo, announced = list(self.plan), set()
        with Heartbeat(self.store.root):
            try:
                while todo or self.in_flight:
                    todo = self._start_ready(todo)
                    busy = next((p for p in self.pools if p.busy()), None)
                    if busy is not None:
                        self._record(*busy.collect())
                    elif todo:  # every job left is held by another run or waits on one that is
                        announce_waits(todo, self.store, announced)
                        time.sleep(poll)
            except BaseException:  # stopped: nobody may wait on the claims of the jobs left unfinished
                for job, _ in self.in_flight.values():
                    with contextlib.suppress(sqlite3.Error):
                        self.store.release(job)
                raise
        return self.summary

    def _start_ready(self, todo: list[Job]) -> list[Job]:
        """One pass in plan order (topological): settle or start what can be; returns the jobs that wait.
        Stops early when every pool is full (the rest is looked at again once a job ends)."""
        waiting = []
        for i, job in enumerate(todo):
            if not any(p.has_room() for p in self.pools):
                return waiting + todo[i:]
            if not self._settle_or_start(job):
                waiting.append(job)
        return waiting

    def _settle_or_start(self, job: Job) -> bool:
        """Skip `job` (done), block it, or claim it and hand it to its pool. False: it must wait."""
        if self.store.status(job.id) == "done":  # before this run, or meanwhile by another run
            self.summary.skipped.append(job.id)
            self.settled.add(job.id)
            return True
        if not all(d in self.settled for d in job.deps):
            return False
        n_bad = sum(d in self.bad for d in job.deps)
        is_summary = job.kind in SUMMARY_KINDS
        if n_bad and not is_summary:
            self._settle(job, ok=False)
            self.summary.blocked.append(job.id)
            self._notify(job, "blocked")
            return True
        pool = self.summary_pool if is_summary else self.pool
        if not pool.has_room() or not self.store.claim(job):
            return False
        self.in_flight[job.id] = (job, n_bad)
        self._notify(job, "start")
        pool.submit(job, {d: self.store.result(d) for d in job.deps if d not in self.bad})
        return True

    def _record(self, job: Job, outcome: Outcome) -> None:
        status, body, tail = outcome  # done: result, score rows; failed: detail for the store, reason
        _, n_bad = self.in_flight[job.id]
        if status == "done" and n_bad:
            status, body = "failed", partial_result(job, n_bad)
            tail = body
        if status == "done":
            self.store.mark_done(job, body, tail)
            self.summary.done.append(job.id)
        else:
            log.error("job %s (%s) failed: %s", job.name, job.id, tail)
            self.store.mark_failed(job, body)
            self.summary.failed[job.id] = tail
        del self.in_flight[job.id]
        self._settle(job, ok=status == "done")
        self._notify(job, status)

    def _settle(self, job: Job, ok: bool) -> None:
        self.settled.add(job.id)
        if not ok:
            self.bad.add(job.id)

    def _notify(self, job: Job, event: str) -> None:
        if self.on_job is not None:
            self.on_job(job, event)


def announce_waits(jobs: list[Job], store: Store, announced: set[str]) -> None:
    """Log, once per job, which of the remaining jobs another run is running."""
    for job in jobs:
        holder = store.holder(job.id)
        if holder is not None and job.id not in announced:
            announced.add(job.id)
            log.info("waiting: %s (%s) is being run by %s", job.name, job.id, holder.describe())
