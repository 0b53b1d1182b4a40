"""The Ray executor's scheduling on a local 2-CPU Ray instance, with toy jobs (no model): the same outcome
as `run_local` when jobs fail (blocked dependents, partial summaries), independent jobs really in parallel,
a resumed run skipping finished work, a dead worker, an output folder a worker cannot see."""

from __future__ import annotations

import contextlib
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

from spillover.engine import ray_executor
from spillover.engine.executors import run_local
from spillover.engine.plan import Plan
from spillover.engine.ray_executor import MARKER, RayOptions, StoreView, Worker, run_ray, worker_slots
from spillover.engine.store import Store
from spillover.errors import SpilloverError

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _jobs_pickled_by_value(ray_cluster):
    """Ray workers cannot import this test module: ship its functions with the jobs."""
    ray_cluster.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def toy(job, results, runner: str = "driver") -> tuple[dict, list[dict]]:
    """A job body driven by its params: fail, kill its process, or meet a partner job (both must run at
    the same time); its result names the results of its dependencies it could read."""
    p = job.params
    if p.get("fail"):
        raise RuntimeError(f"{job.name} fails on purpose")
    if p.get("die"):
        os._exit(3)
    if "meet" in p:
        folder = Path(p["meet"])
        (folder / f"{job.name}.here").write_text(str(os.getpid()))
        deadline = time.monotonic() + 60
        while not (folder / f"{p['partner']}.here").exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{job.name}: {p['partner']} did not run at the same time")
            time.sleep(0.01)
    seen = set()
    for d in job.deps:  # a summary job also runs when some of its inputs failed
        with contextlib.suppress(KeyError):
            seen.add(results.result(d)["name"])
    score = {
        "model": job.name,
        "target": "t",
        "metric": "m",
        "value": float(len(seen)),
        "n": 1,
        "ci_low": 0.0,
        "ci_high": 1.0,
    }
    tracking = os.environ.get("MLFLOW_TRACKING_URI")
    return {
        "name": job.name,
        "saw": sorted(seen),
        "tracking": tracking,
        "runner": runner,
        "pid": os.getpid(),
    }, [score]


def toy_factory(view: StoreView):
    runner = uuid.uuid4().hex  # one per built runner: a study's runner is its worker's loaded model
    return lambda job: toy(job, view, runner)


def failing_plan(fail: bool = True) -> tuple[Plan, dict[str, str]]:
    """a1 ok, a2 fails; b1 <- a1; b2 <- a2 (blocked); c <- b2 (blocked); analyse <- all (partial)."""
    plan = Plan()
    ids = {"a1": plan.add("train", "a1", {"x": 1}), "a2": plan.add("train", "a2", {"fail": fail})}
    ids["b1"] = plan.add("eval", "b1", {}, [ids["a1"]])
    ids["b2"] = plan.add("eval", "b2", {}, [ids["a2"]])
    ids["c"] = plan.add("eval", "c", {}, [ids["b2"]])
    ids["analyse"] = plan.add("analyse", "analyse", {}, list(ids.values()))
    return plan, ids


def _run(executor: str, plan: Plan, root: Path, **options):
    store, events = Store(root), []

    def on_job(job, event):
        events.append((job.name, event))

    local = lambda job: toy(job, store)  # noqa: E731
    try:
        if executor == "local":
            summary = run_local(plan, store, local, on_job)
        else:
            summary = run_ray(plan, store, toy_factory, local, on_job, RayOptions(**options))
        jobs = {j["name"]: (j["status"], (j["error"] or "").splitlines()[-1:]) for j in store.jobs()}
        results = {j.name: store.result(j.id) for j in plan if store.status(j.id) == "done"}
        return summary, jobs, results, sorted(events), store.scores()
    finally:
        store.close()


def _comparable(run):
    """A run's outcome without its order of completion (local: plan order; Ray: as workers finish)."""
    summary, jobs, results, events, scores = run
    outcome = {k: sorted(v) if isinstance(v, list) else v for k, v in vars(summary).items()}
    where = ("runner", "pid")  # which process ran a job
    results = {name: {k: v for k, v in r.items() if k not in where} for name, r in results.items()}
    return outcome, jobs, results, events, sorted(scores, key=str)


def test_failures_block_dependents_exactly_as_run_local(ray_cluster, tmp_path):
    plan, ids = failing_plan()
    local = _run("local", plan, tmp_path / "local")
    remote = _run("ray", plan, tmp_path / "ray")
    assert _comparable(remote) == _comparable(local)
    summary, jobs, results, _, _ = remote
    assert sorted(summary.done) == sorted([ids["a1"], ids["b1"]])
    assert set(summary.failed) == {ids["a2"], ids["analyse"]}
    assert sorted(summary.blocked) == sorted([ids["b2"], ids["c"]])
    assert jobs["a2"] == ("failed", ["RuntimeError: a2 fails on purpose"])
    assert jobs["analyse"][0] == "failed" and "partial result: 3 of its 5" in jobs["analyse"][1][0]
    assert "b2" not in jobs and "c" not in jobs  # blocked jobs stay pending
    assert {k: r["saw"] for k, r in results.items()} == {"a1": [], "b1": ["a1"]}  # b1 read a1's result


def test_independent_jobs_run_at_the_same_time_on_two_workers(ray_cluster, tmp_path, monkeypatch):
    """Also: the driver's MLFLOW_TRACKING_URI reaches the workers (a Ray cluster's nodes do not share the
    driver's environment; this local one was started before the variable was set)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    plan = Plan()
    meet = {"meet": str(tmp_path)}
    one = plan.add("train", "one", {**meet, "partner": "two"})
    two = plan.add("train", "two", {**meet, "partner": "one"})
    plan.add("analyse", "analyse", {}, [one, two])
    summary, jobs, results, events, _ = _run("ray", plan, tmp_path / "out")
    assert summary.ok and len(summary.done) == 3, jobs
    assert (tmp_path / "one.here").read_text() != (tmp_path / "two.here").read_text()  # two processes
    assert results["analyse"]["saw"] == ["one", "two"]
    assert {r["tracking"] for r in results.values()} == {"http://tracking.example:5000"}
    assert events.count(("analyse", "start")) == 1


def test_rerun_after_a_crash_skips_done_jobs_and_redoes_running_ones(ray_cluster, tmp_path):
    plan, ids = failing_plan(fail=False)
    store = Store(tmp_path)
    a1, b1 = plan.jobs[ids["a1"]], plan.jobs[ids["b1"]]
    store.mark_running(a1)
    store.mark_done(a1, {"name": "a1 (from the first run)", "saw": []})
    store.mark_running(b1)  # the crash came while b1 ran
    store.close()
    summary, jobs, results, events, _ = _run("ray", plan, tmp_path)
    assert summary.ok and summary.skipped == [ids["a1"]]
    assert ids["b1"] in summary.done and ("a1", "start") not in events
    assert results["b1"]["saw"] == ["a1 (from the first run)"]
    assert all(v == ("done", []) for v in jobs.values()), jobs


def test_a_job_another_live_executor_holds_is_left_to_it_and_its_dependents_wait(ray_cluster, tmp_path):
    """Two runs on one folder share the work with a Ray run too (docs/studies.md): a1 is claimed by another
    live process, so this run neither starts it nor its dependent b1 until a1 is done there; then a1 counts
    as skipped and b1 reads its result."""
    import subprocess
    import threading

    from spillover.engine.owners import owner_of

    plan, ids = failing_plan(fail=False)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        store = Store(tmp_path)
        assert store.claim(plan.jobs[ids["a1"]], owner=str(owner_of(other.pid)))
        store.close()

        def other_finishes():
            time.sleep(2)
            finisher = Store(tmp_path)
            finisher.mark_done(plan.jobs[ids["a1"]], {"name": "a1 (by the other run)", "saw": []})
            finisher.close()

        thread = threading.Thread(target=other_finishes)
        thread.start()
        summary, jobs, results, events, _ = _run("ray", plan, tmp_path)
        thread.join()
    finally:
        other.kill()
        other.wait()
    assert summary.ok and summary.skipped == [ids["a1"]], summary
    assert ("a1", "start") not in events
    assert results["b1"]["saw"] == ["a1 (by the other run)"]
    assert all(status == "done" for status, _ in jobs.values()), jobs


def test_a_dead_worker_fails_its_job_and_a_new_worker_takes_the_rest(ray_cluster, tmp_path):
    plan = Plan()
    dies = plan.add("train", "dies", {"die": True})
    plan.add("eval", "after", {}, [dies])
    for i in range(3):
        plan.add("train", f"ok{i}", {"i": i})
    summary, jobs, results, _, _ = _run("ray", plan, tmp_path)
    assert summary.failed.keys() == {dies} and "worker running it died" in summary.failed[dies]
    assert jobs["dies"][0] == "failed" and "after" not in jobs
    assert [jobs[f"ok{i}"][0] for i in range(3)] == ["done"] * 3
    # each worker built its runner once and kept it for every job it ran
    runners = {r["pid"]: set() for r in results.values()}
    for r in results.values():
        runners[r["pid"]].add(r["runner"])
    assert all(len(built) == 1 for built in runners.values()), runners
    assert len(runners) < len(results), "some worker should have run several jobs"


def test_a_worker_that_cannot_see_the_output_folder_stops_the_run(ray_cluster, tmp_path, monkeypatch):
    """What a worker on a node without the shared filesystem sees: no marker, or another run's."""
    plan = Plan()
    plan.add("train", "one", {})
    monkeypatch.setattr(ray_executor, "atomic_write_text", lambda path, text: path.write_text("stale run"))
    with pytest.raises(SpilloverError, match="cannot see the output folder .*shared by every node"):
        _run("ray", plan, tmp_path)
    job = next(iter(plan))
    store = Store(tmp_path)
    assert store.status(job.id) == "pending"  # given back: another run need not wait for this one to exit
    store.close()
    assert Worker(toy_factory, str(tmp_path / "elsewhere"), "t", 1).run(job, {})[0] == "unreachable"
    (tmp_path / MARKER).write_text("t")
    assert Worker(toy_factory, str(tmp_path), "t", 1).run(job, {})[0] == "done"


def test_job_resources_must_fit_a_node(ray_cluster, tmp_path):
    plan = Plan()
    plan.add("train", "one", {})
    with pytest.raises(SpilloverError, match=r"no node .* --cpus-per-job 3 .*2 CPUs, 0 GPUs"):
        _run("ray", plan, tmp_path, cpus_per_job=3)
    with pytest.raises(SpilloverError, match="--gpus-per-job 0.5"):
        _run("ray", plan, tmp_path, gpus_per_job=0.5)


def test_worker_slots_count_what_fits_on_each_live_node():
    node = lambda cpu, gpu=0, alive=True: {"Alive": alive, "Resources": {"CPU": cpu, "GPU": gpu}}  # noqa: E731
    nodes = [node(8, 2), node(4), node(64, 8, alive=False)]
    assert worker_slots(nodes, RayOptions()) == 12
    assert worker_slots(nodes, RayOptions(cpus_per_job=3)) == 3
    assert worker_slots(nodes, RayOptions(cpus_per_job=2, gpus_per_job=1)) == 2
    assert worker_slots(nodes, RayOptions(gpus_per_job=0.5)) == 4
