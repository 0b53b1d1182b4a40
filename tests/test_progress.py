"""The study progress (`StudyProgress`): jobs done / total, elapsed and an ETA from the finished jobs'
durations per job kind; plain lines when the output is not a terminal."""

from __future__ import annotations

import io

from spillover.engine.plan import Plan
from spillover.progress import StudyProgress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _plan() -> Plan:
    plan = Plan()
    base = plan.add("eval", "eval base", {"t": 0})
    a = plan.add("train", "train a", {"t": 1})
    b = plan.add("train", "train b", {"t": 2})
    plan.add("eval", "eval a", {"t": 3}, deps=[a])
    plan.add("eval", "eval b", {"t": 4}, deps=[b])
    plan.add("analyse", "analyse", {"t": 5}, deps=[base])
    return plan


def test_eta_uses_each_kinds_mean_duration_and_skips_done_jobs():
    plan, clock, out = _plan(), Clock(), io.StringIO()
    jobs = list(plan)
    bar = StudyProgress(out, clock=clock)
    bar.start(plan, {jobs[0].id})  # the base evaluation finished in an earlier run
    assert bar.finished == 1 and bar.total == 6 and bar.eta() is None  # nothing timed yet

    bar.job(jobs[1], "start")
    clock.now = 100.0
    bar.job(jobs[1], "done")  # a training: 100 s
    # left: one training (100 s), two evaluations and the analysis (no timing of their kind: 100 s each)
    assert bar.eta() == 400.0
    bar.job(jobs[3], "start")
    clock.now = 110.0
    bar.job(jobs[3], "done")  # an evaluation: 10 s
    assert bar.eta() == 100.0 + 10.0 + 55.0  # analysis: the mean of every job run so far
    bar.job(jobs[2], "start")
    clock.now = 150.0  # 40 s into the second training
    assert bar.eta() == 165.0 - 40.0
    lines = out.getvalue().splitlines()
    assert lines[1] == "   done train a  [2/6 jobs · 0:01:40 elapsed · ETA 0:06:40]"
    assert lines[-1].startswith("  start train b  [3/6 jobs")


def test_failed_and_blocked_jobs_count_as_finished_without_timing():
    plan, clock, out = _plan(), Clock(), io.StringIO()
    jobs = list(plan)
    bar = StudyProgress(out, clock=clock)
    bar.start(plan, set())
    bar.job(jobs[1], "start")
    clock.now = 5.0
    bar.job(jobs[1], "failed")
    bar.job(jobs[3], "blocked")
    assert bar.finished == 2 and bar.eta() is None
    assert "blocked eval a" in out.getvalue()
    bar.step({"step": 1, "total_steps": 3, "loss": 1.0})  # no terminal: no job bar, nothing printed
    bar.close()
