"""Concurrent writers on one store: claims are exclusive while their owner lives and taken over when it
dies; concurrent `mark_done`s lose nothing; two executor processes share a plan, each job run once."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from spillover.engine.executors import run_local
from spillover.engine.owners import current_owner, is_stale, owner_of
from spillover.engine.plan import Job, Plan
from spillover.engine.store import Heartbeat, Store

pytestmark = pytest.mark.integration

WORKER = Path(__file__).with_name("claim_worker.py")
N_JOBS = 14  # claim_worker.make_plan()


@pytest.fixture()
def sleeper():
    """A live process of this host that is not this one (an owner that is alive)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def test_claim_skips_done_and_live_claims_and_takes_pending_failed_and_dead_ones(tmp_path, sleeper):
    mine, theirs = Store(tmp_path), Store(tmp_path)  # two connections, as two executors have
    job, other = Job("train", "t", {"x": 1}), Job("eval", "e", {"x": 2})
    live = str(owner_of(sleeper.pid))
    assert theirs.claim(job, live)
    assert not mine.claim(job), "a claim of a live process must not be taken"
    assert mine.holder(job.id) == owner_of(sleeper.pid) and mine.status(job.id) == "running"

    sleeper.kill()
    sleeper.wait()  # reaped: the pid is gone
    assert mine.claim(job), "the claim of a dead process is stale"
    assert mine.holder(job.id) == current_owner()
    assert theirs.claim(job, live) is False  # and the dead owner cannot take it back

    mine.mark_done(job, {"r": 1})
    assert not theirs.claim(job) and not mine.claim(job), "a done job is never claimed"
    theirs.mark_failed(job, "a late failure")  # e.g. an executor whose lease had run out
    assert mine.status(job.id) == "done" and mine.result(job.id) == {"r": 1}, "a result is never lost"

    assert mine.claim(other)  # never seen: pending
    mine.mark_failed(other, "boom")
    assert theirs.claim(other, live) is True, "a failed job is retried"
    mine.close()
    theirs.close()


def test_staleness_rules():
    me, host = current_owner(), socket.gethostname()
    assert not is_stale(str(me), None, lease=1)
    assert is_stale(None, None, lease=1) and is_stale("not an owner id", None, lease=1)
    assert is_stale(f"{host}:{me.pid}:{me.start}999", None, lease=1), "a recycled pid is another process"
    assert is_stale(f"{host}:999999999:1", None, lease=1), "no such process"
    # another host's process cannot be checked: its heartbeat decides
    assert not is_stale("elsewhere:1:1", heartbeat=100.0, lease=60, now=150.0)
    assert is_stale("elsewhere:1:1", heartbeat=100.0, lease=60, now=161.0)
    assert is_stale("elsewhere:1:1", heartbeat=None, lease=60, now=161.0)


def test_heartbeat_refreshes_only_this_processs_running_claims(tmp_path):
    store = Store(tmp_path)
    mine, theirs, done = Job("a", "a", {}), Job("b", "b", {}), Job("c", "c", {})
    assert store.claim(mine) and store.claim(theirs, "elsewhere:1:1") and store.claim(done)
    store.mark_done(done, {})
    before = dict(store._conn.execute("SELECT id, heartbeat FROM jobs").fetchall())
    with Heartbeat(tmp_path, every=0.05):
        time.sleep(0.3)
    after = dict(store._conn.execute("SELECT id, heartbeat FROM jobs").fetchall())
    assert after[mine.id] > before[mine.id]
    assert after[theirs.id] == before[theirs.id] and after[done.id] == before[done.id]
    store.close()


def test_concurrent_claimers_take_each_job_exactly_once(tmp_path):
    """Eight executors (threads, each its own connection and owner) race for the same 40 jobs."""
    jobs = [Job("eval", f"j{i}", {"i": i}) for i in range(40)]
    Store(tmp_path).close()
    wins: Counter[str] = Counter()
    lock = threading.Lock()

    def executor(n: int) -> None:
        store = Store(tmp_path)
        for job in jobs:
            if store.claim(job, f"worker{n}:1:1"):  # another host's live owner (fresh heartbeat)
                with lock:
                    wins[job.id] += 1
        store.close()

    _run_threads(executor, 8)
    assert wins == Counter({j.id: 1 for j in jobs})


def test_concurrent_mark_done_writers_lose_no_rows(tmp_path):
    """Eight writers commit 30 results (+ two score rows each) at the same time: all 240 are there."""
    Store(tmp_path).close()

    def writer(n: int) -> None:
        store = Store(tmp_path)
        for i in range(30):
            job = Job("eval", f"w{n}-{i}", {"n": n, "i": i})
            store.mark_running(job)
            rows = [_score(f"w{n}-{i}", metric) for metric in ("acc", "f1")]
            store.mark_done(job, {"n": n, "i": i}, rows)
        store.close()

    _run_threads(writer, 8)
    conn = sqlite3.connect(tmp_path / "results.db")
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert conn.execute("SELECT count(*) FROM jobs WHERE status = 'done'").fetchone() == (240,)
    assert conn.execute("SELECT count(*) FROM scores").fetchone() == (480,)
    conn.close()


def test_two_executor_processes_share_a_plan_each_job_run_once(tmp_path):
    log = tmp_path / "runs.log"
    procs = _start_workers(tmp_path, log, [[], []])
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, out + err
    runs = _runs(log)
    assert Counter(name for _, name in runs) == Counter({name: 1 for name in _job_names()}), runs
    assert {pid for pid, _ in runs} == {p.pid for p in procs}, "both executors should have done work"
    _assert_all_done(tmp_path)


def test_a_killed_executors_claim_is_taken_over(tmp_path):
    """Executor A hangs in job a1 and is SIGKILLed while B waits on it: B takes a1 over and finishes."""
    log = tmp_path / "runs.log"
    (a,) = _start_workers(tmp_path, log, [["a1"]])
    _wait_for(lambda: _status(tmp_path, "a1") == "running")
    (b,) = _start_workers(tmp_path, log, [[]], go=False)
    # B runs everything not behind a1, then waits: a1 is held by a live owner
    _wait_for(lambda: {"b3", "s4"} <= {name for _, name in _runs(log)})
    time.sleep(0.3)
    assert b.poll() is None and _status(tmp_path, "a1") == "running", "B must wait while A lives"
    a.send_signal(signal.SIGKILL)
    a.wait()
    out, err = b.communicate(timeout=60)
    assert b.returncode == 0, out + err
    runs = _runs(log)
    assert Counter(name for _, name in runs) == Counter({name: 1 for name in _job_names()}), runs
    assert (b.pid, "a1") in runs
    _assert_all_done(tmp_path)


# ---- helpers ----------------------------------------------------------------------------------------


def _score(model: str, metric: str) -> dict:
    return {
        "model": model,
        "target": "t",
        "metric": metric,
        "value": 0.5,
        "n": 2,
        "ci_low": 0.0,
        "ci_high": 1.0,
    }


def _run_threads(target, n: int) -> None:
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            target(i)
        except BaseException as e:  # re-raised below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def _start_workers(root: Path, log: Path, args: list[list[str]], go: bool = True) -> list[subprocess.Popen]:
    """Start one claim_worker per entry of `args`; once all are ready, let them go at the same moment."""
    before = set(root.glob(f"{log.name}.ready.*"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(WORKER.parent), *sys.path])}
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(root), str(log), *a],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for a in args
    ]
    _wait_for(lambda: len(set(root.glob(f"{log.name}.ready.*")) - before) == len(procs))
    if go:
        Path(f"{log}.go").touch()
    return procs


def _wait_for(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _runs(log: Path) -> list[tuple[int, str]]:
    if not log.exists():
        return []
    return [(int(pid), name) for pid, name in (line.split() for line in log.read_text().splitlines())]


def _job_names() -> list[str]:
    sys.path.insert(0, str(WORKER.parent))
    try:
        from claim_worker import make_plan
    finally:
        sys.path.remove(str(WORKER.parent))
    names = [job.name for job in make_plan()]
    assert len(names) == N_JOBS
    return names


def _status(root: Path, name: str) -> str | None:
    if not (root / "results.db").exists():
        return None
    conn = sqlite3.connect(root / "results.db", timeout=5)
    try:
        row = conn.execute("SELECT status FROM jobs WHERE name = ?", (name,)).fetchone()
    except sqlite3.OperationalError:  # not created yet
        row = None
    finally:
        conn.close()
    return row[0] if row else None


def _assert_all_done(root: Path) -> None:
    store = Store(root)
    try:
        jobs = {j["name"]: j["status"] for j in store.jobs()}
        assert jobs == {name: "done" for name in _job_names()}
        assert {s["model"] for s in store.scores()} == set(jobs)
        for j in store.jobs():
            assert store.result(j["id"]) == {"name": j["name"]}
    finally:
        store.close()


def test_an_interrupted_executor_gives_its_claim_back(tmp_path):
    """Ctrl-C in a session that lives on (a notebook): the job goes back to pending, nobody waits on it."""
    plan = Plan()
    plan.add("train", "t", {})
    store = Store(tmp_path)

    def interrupted(job):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_local(plan, store, interrupted)
    (job,) = plan
    assert store.status(job.id) == "pending" and store.holder(job.id) is None
    assert store.claim(job, "elsewhere:1:1")
    store.close()


def test_a_store_written_before_claims_gets_the_owner_columns(tmp_path):
    job, other = Job("eval", "e", {"x": 1}), Job("eval", "f", {"x": 2})
    old = sqlite3.connect(tmp_path / "results.db")
    old.executescript(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, params TEXT NOT NULL,"
        " status TEXT NOT NULL, error TEXT, started REAL, finished REAL, result TEXT);"
        f"INSERT INTO jobs VALUES ('{job.id}', 'eval', 'e', '{{}}', 'running', NULL, 1.0, NULL, NULL);"
        f"INSERT INTO jobs VALUES ('{other.id}', 'eval', 'f', '{{}}', 'done', NULL, 1.0, 2.0, '{{\"v\": 1}}');"
    )
    old.close()
    store = Store(tmp_path)
    assert store.result(other.id) == {"v": 1} and not store.claim(other)
    assert store.holder(job.id) is None
    assert store.claim(job), "a running job without an owner (older spillover) is stale"
    assert store.holder(job.id) == current_owner()
    store.close()


def test_wal_switch_waits_for_a_lock_held_by_another_connection(tmp_path):
    """Two processes opening a fresh study at once: the journal-mode change must wait for the other
    connection's lock, not fail with "database is locked" (SQLite skips the busy handler there), and give
    up with that error after its timeout."""
    from spillover.engine.store import _set_wal

    path = tmp_path / "results.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("CREATE TABLE t (x)")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        other.execute("PRAGMA journal_mode=WAL")  # what the store used to do: fails at once
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _set_wal(other, timeout=0.2)  # still held after the timeout: the error
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    start = time.monotonic()
    _set_wal(other, timeout=10)
    release.join()
    assert time.monotonic() - start >= 0.25
    assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    holder.close()
    other.close()
