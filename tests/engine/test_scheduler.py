"""The one scheduler with any worker pool: the skip / block / claim / run / record rules do not depend on
where jobs run or in which order they end; what a pool is handed; claims given back when the run stops;
and the study glue for Ray never imports the study runner (no import cycle)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from spillover.engine.executors import run_local
from spillover.engine.plan import Job, Plan
from spillover.engine.scheduler import attempt, schedule
from spillover.engine.store import Store


class LifoPool:
    """Holds up to `size` jobs and ends the most recently handed one first (as a parallel pool may)."""

    def __init__(self, size: int = 3) -> None:
        self.size, self.jobs, self.inputs = size, [], {}

    def has_room(self) -> bool:
        return len(self.jobs) < self.size

    def busy(self) -> bool:
        return bool(self.jobs)

    def submit(self, job: Job, inputs: dict) -> None:
        self.jobs.append(job)
        self.inputs[job.name] = inputs

    def collect(self):
        job = self.jobs.pop()
        return job, attempt(body, job)


def body(job: Job):
    if job.params.get("fail"):
        raise RuntimeError(f"{job.name} fails on purpose")
    return {"name": job.name}, []


def failing_plan() -> tuple[Plan, dict[str, str]]:
    """a1 ok, a2 fails; b1 <- a1; b2 <- a2 (blocked); c <- b2 (blocked); analyse <- all (partial)."""
    plan = Plan()
    ids = {"a1": plan.add("train", "a1", {"x": 1}), "a2": plan.add("train", "a2", {"fail": True})}
    ids["b1"] = plan.add("eval", "b1", {}, [ids["a1"]])
    ids["b2"] = plan.add("eval", "b2", {}, [ids["a2"]])
    ids["c"] = plan.add("eval", "c", {}, [ids["b2"]])
    ids["analyse"] = plan.add("analyse", "analyse", {}, list(ids.values()))
    return plan, ids


def _outcome(root, run):
    plan, ids = failing_plan()
    store, events = Store(root), []
    try:
        summary = run(plan, store, lambda job, event: events.append((job.name, event)))
        statuses = {j["name"]: j["status"] for j in store.jobs()}
    finally:
        store.close()
    names = {v: k for k, v in ids.items()}
    summary = {k: sorted(names[i] for i in v) for k, v in vars(summary).items()}
    return summary, statuses, sorted(events)


def test_any_pool_gives_run_locals_outcome(tmp_path):
    pool = LifoPool()
    local = _outcome(tmp_path / "local", lambda plan, store, on_job: run_local(plan, store, body, on_job))
    lifo = _outcome(tmp_path / "lifo", lambda plan, store, on_job: schedule(plan, store, pool, on_job=on_job))
    assert lifo == local
    summary, statuses, events = local
    assert summary == {
        "done": ["a1", "b1"],
        "skipped": [],
        "failed": ["a2", "analyse"],
        "blocked": ["b2", "c"],
    }
    assert statuses == {"a1": "done", "a2": "failed", "b1": "done", "analyse": "failed"}  # blocked: pending
    assert ("b2", "blocked") in events and ("analyse", "start") in events
    # a pool is handed the results of a job's dependencies that are done, and only those
    assert pool.inputs["b1"] == {failing_plan()[1]["a1"]: {"name": "a1"}}
    assert list(pool.inputs["analyse"].values()) == [{"name": "a1"}, {"name": "b1"}]


def test_a_rerun_skips_what_is_done_and_retries_what_failed(tmp_path):
    run = lambda plan, store, on_job: run_local(plan, store, body, on_job)  # noqa: E731
    _outcome(tmp_path, run)
    summary, _, events = _outcome(tmp_path, run)
    assert summary["skipped"] == ["a1", "b1"] and summary["failed"] == ["a2", "analyse"]
    assert ("a1", "start") not in events and ("a2", "start") in events


def test_a_run_that_stops_gives_back_every_claim_in_flight(tmp_path):
    """A pool that breaks (a bug, Ctrl-C) while several jobs are in flight: none stays `running`."""

    class Broken(LifoPool):
        def collect(self):
            raise KeyboardInterrupt

    plan = Plan()
    for i in range(3):
        plan.add("train", f"t{i}", {"i": i})
    store = Store(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        schedule(plan, store, Broken(size=2))
    assert [store.status(job.id) for job in plan] == ["pending", "pending", None]
    assert all(store.holder(job.id) is None for job in plan)
    store.close()


def test_a_bug_in_a_job_stops_the_run_and_leaves_its_job_pending(tmp_path):
    """Not a job error (`JOB_ERRORS`): the run stops with the bug's exception; the claim is released."""
    plan = Plan()
    plan.add("train", "t", {})

    def buggy(job):
        raise TypeError("a bug")

    store = Store(tmp_path)
    with pytest.raises(TypeError, match="a bug"):
        run_local(plan, store, buggy)
    assert store.status(next(iter(plan)).id) == "pending"
    store.close()


@pytest.mark.integration
def test_the_ray_study_glue_does_not_import_the_study_runner():
    code = (
        "import sys, spillover.studies.ray_run\n"
        "assert 'spillover.studies.run' not in sys.modules, 'ray_run imports studies.run'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
