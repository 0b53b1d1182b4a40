"""The executors a study can run on, and the in-process one: `run_local` runs every unfinished job of a
plan in this process, one at a time in plan order, on one set of loaded resources (the study's context
keeps the base model loaded and swaps adapters).

What runs when and what the store records (skip / block / claim / run / record) is decided by the one
scheduler (`engine.scheduler`); this module only supplies its in-process worker pool. Since jobs are
claimed in the store before they run, several executors on one store (two `spillover run`s on one folder)
share the work: each job runs once, in one of them.
"""

from __future__ import annotations

from spillover.engine.plan import Job, Plan
from spillover.engine.scheduler import POLL_S, OnJob, Outcome, Runner, RunSummary, attempt, schedule
from spillover.engine.store import Store

# The `--executor` names: `run_local` below, and `run_ray` in ray_executor.py (docs/scaling.md).
EXECUTORS = ("local", "ray")


class InProcessPool:
    """A worker pool of one slot in this process: the job handed over runs when it is collected."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.job: Job | None = None

    def has_room(self) -> bool:
        return self.job is None

    def busy(self) -> bool:
        return self.job is not None

    def submit(self, job: Job, inputs: dict) -> None:
        """`inputs` are not needed: the runner reads its dependencies' results from the store itself."""
        assert self.job is None, "one job at a time"
        self.job = job

    def collect(self) -> tuple[Job, Outcome]:
        job, self.job = self.job, None
        assert job is not None, "nothing was submitted"
        return job, attempt(self.runner, job)


def run_local(
    plan: Plan, store: Store, runner: Runner, on_job: OnJob | None = None, poll: float = POLL_S
) -> RunSummary:
    """Run every unfinished job in plan order with `runner`, in this process (see `engine.scheduler`).
    Failures are recorded; independent jobs still run. Jobs another live executor holds are left to it,
    and the jobs that depend on them wait (polling every `poll` seconds) until they are done there, or
    failed, or their owner died — then this one takes them over. A job done elsewhere counts as skipped."""
    return schedule(plan, store, InProcessPool(runner), on_job=on_job, poll=poll)
