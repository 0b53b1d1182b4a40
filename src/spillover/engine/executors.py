"""Executors run a plan's jobs and record them in the store; finished jobs are skipped.

`run_local` runs in-process, in plan order, on one set of loaded resources (the study's context keeps
the base model loaded and swaps adapters). A job whose dependency failed is reported as blocked and
left pending, so fixing the cause and re-running picks it up.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from spillover.engine.plan import Job, Plan
from spillover.engine.store import Store
from spillover.errors import SpilloverError

log = logging.getLogger(__name__)

# The `--executor` names: `run_local` below, and `run_ray` in ray_executor.py (docs/scaling.md).
EXECUTORS = ("local", "ray")

# Jobs that summarise others run even when some inputs failed (a partial report beats none), but are then
# recorded as failed so the next run, after the inputs are fixed, redoes them.
SUMMARY_KINDS = frozenset({"analyse"})

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
    plan: Plan, store: Store, runner: Runner, on_job: Callable[[Job, str], None] | None = None
) -> RunSummary:
    """Run every unfinished job in order. Failures are recorded; independent jobs still run."""
    summary = RunSummary()
    bad: set[str] = set()
    for job in plan:
        if store.status(job.id) == "done":
            summary.skipped.append(job.id)
            continue
        n_bad = sum(d in bad for d in job.deps)
        if n_bad and job.kind not in SUMMARY_KINDS:
            bad.add(job.id)
            summary.blocked.append(job.id)
            _notify(on_job, job, "blocked")
            continue
        _notify(on_job, job, "start")
        store.mark_running(job)
        try:
            result, scores = runner(job)
            if n_bad:
                raise SpilloverError(
                    f"partial result: {n_bad} of its {len(job.deps)} inputs failed or were blocked"
                )
        except (SpilloverError, RuntimeError, ValueError, OSError, KeyError, AssertionError) as e:
            # Recorded with its traceback, not swallowed: the study goes on and `spillover status` shows it.
            detail = str(e) if isinstance(e, SpilloverError) else traceback.format_exc(limit=8)
            log.error("job %s (%s) failed: %s", job.name, job.id, e)
            store.mark_failed(job, detail)
            bad.add(job.id)
            summary.failed[job.id] = str(e)
            _notify(on_job, job, "failed")
            continue
        store.mark_done(job, result, scores)
        summary.done.append(job.id)
        _notify(on_job, job, "done")
    return summary


def _notify(on_job, job: Job, event: str) -> None:
    if on_job is not None:
        on_job(job, event)
