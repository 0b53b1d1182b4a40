"""Executors run a plan's jobs and record them in the store; finished jobs are skipped.

`run_local` runs in-process, in plan order, on one set of loaded resources (the study's context keeps
the base model loaded and swaps adapters). A job whose dependency failed is reported as blocked and
left pending, so fixing the cause and re-running picks it up. Jobs are claimed in the store before they
run, so several executors on one store (two `spillover run`s on one folder) share the work: each job runs
once, in one of them.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from spillover.engine.plan import Job, Plan
from spillover.engine.store import Heartbeat, Store
from spillover.errors import SpilloverError

log = logging.getLogger(__name__)

# The `--executor` names: `run_local` below, and `run_ray` in ray_executor.py (docs/scaling.md).
EXECUTORS = ("local", "ray")

# Jobs that summarise others run even when some inputs failed (a partial report beats none), but are then
# recorded as failed so the next run, after the inputs are fixed, redoes them.
SUMMARY_KINDS = frozenset({"analyse"})

# The exceptions a job's failure is recorded for (the study goes on); anything else is a bug and stops the run.
JOB_ERRORS = (SpilloverError, RuntimeError, ValueError, OSError, KeyError, AssertionError)

POLL_S = 0.5  # seconds between looks at the store while every remaining job waits on another executor

# A job runner returns (result, score rows) for the store.
Runner = Callable[[Job], tuple[dict[str, Any], list[dict[str, Any]]]]


@dataclass
class RunSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    blocked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked


def run_local(
    plan: Plan,
    store: Store,
    runner: Runner,
    on_job: Callable[[Job, str], None] | None = None,
    poll: float = POLL_S,
) -> RunSummary:
    """Run every unfinished job in order. Failures are recorded; independent jobs still run.

    Each job is claimed in the store before it runs (see `Store.claim`), so executors sharing the store
    cooperate: a job another live executor is running is left to it, and the jobs that depend on it wait
    (polling every `poll` seconds) until it is done there, or failed, or its owner died — then this one
    takes it over. A job done elsewhere counts as skipped."""
    summary = RunSummary()
    bad: set[str] = set()
    settled: set[str] = set()  # done, or attempted / blocked by this executor
    todo = list(plan)
    announced: set[str] = set()
    with Heartbeat(store.root):
        while todo:
            left = [job for job in todo if not _step(job, store, runner, on_job, summary, bad, settled)]
            if len(left) == len(todo):  # every remaining job is held elsewhere or waits on one that is
                announce_waits(left, store, announced)
                time.sleep(poll)
            todo = left
    return summary


def _step(
    job: Job, store: Store, runner: Runner, on_job, summary: RunSummary, bad: set[str], settled: set[str]
) -> bool:
    """Try to settle `job`: skip it (done), block it, or claim and run it. False: it must wait."""
    if store.status(job.id) == "done":
        summary.skipped.append(job.id)
        settled.add(job.id)
        return True
    if not all(d in settled for d in job.deps):
        return False
    n_bad = sum(d in bad for d in job.deps)
    if n_bad and job.kind not in SUMMARY_KINDS:
        bad.add(job.id)
        settled.add(job.id)
        summary.blocked.append(job.id)
        _notify(on_job, job, "blocked")
        return True
    if not store.claim(job):
        return False
    settled.add(job.id)
    _notify(on_job, job, "start")
    try:
        result, scores = runner(job)
        if n_bad:
            raise SpilloverError(partial_result(job, n_bad))
    except JOB_ERRORS as e:
        detail = failure_detail(e)
        log.error("job %s (%s) failed: %s", job.name, job.id, e)
        store.mark_failed(job, detail)
        bad.add(job.id)
        summary.failed[job.id] = str(e)
        _notify(on_job, job, "failed")
        return True
    except BaseException:  # interrupted (Ctrl-C in a session that lives on): nobody may wait on this claim
        with contextlib.suppress(sqlite3.Error):
            store.release(job)
        raise
    store.mark_done(job, result, scores)
    summary.done.append(job.id)
    _notify(on_job, job, "done")
    return True


def announce_waits(jobs: list[Job], store: Store, announced: set[str]) -> None:
    """Log, once per job, which of the remaining jobs another executor is running."""
    for job in jobs:
        holder = store.holder(job.id)
        if holder is not None and job.id not in announced:
            announced.add(job.id)
            log.info("waiting: %s (%s) is being run by %s", job.name, job.id, holder.describe())


def _notify(on_job, job: Job, event: str) -> None:
    if on_job is not None:
        on_job(job, event)


def partial_result(job: Job, n_bad: int) -> str:
    """Why a summary job that ran with `n_bad` failed or blocked inputs is recorded as failed."""
    return f"partial result: {n_bad} of its {len(job.deps)} inputs failed or were blocked"


def failure_detail(e: BaseException) -> str:
    """What the store records for a failed job (call inside the `except`): a person's message for a
    SpilloverError, else the traceback — not swallowed: `spillover status` shows it."""
    return str(e) if isinstance(e, SpilloverError) else traceback.format_exc(limit=8)
