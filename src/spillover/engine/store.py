"""The results store: one SQLite file (WAL, transactions) plus one artifact folder per job.

A job is `done` only when its result row is committed, and that commit is the last thing a job does,
so a crash at any point leaves the job pending (or running, which is treated as pending) and a re-run
redoes exactly the unfinished work. Artifacts are written into the job folder before that commit.

Several executors may share one store (two `spillover run`s on one folder, Ray workers): `claim` takes a
job atomically for one owner (a process, see `engine.owners`), so each job runs in one place at a time; a
claim whose owner died, or (another host) stopped sending heartbeats for `LEASE_S`, can be taken over.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from spillover.engine.owners import Owner, current_owner, is_stale
from spillover.engine.plan import Job, params_json

log = logging.getLogger(__name__)
LEASE_S = 120.0  # a claim of another host's process without a heartbeat for this long is stale
HEARTBEAT_S = 15.0  # how often a running executor refreshes its claims' heartbeat

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, params TEXT NOT NULL,
    status TEXT NOT NULL, error TEXT, started REAL, finished REAL, result TEXT,
    owner TEXT, heartbeat REAL
);
CREATE TABLE IF NOT EXISTS scores (
    job_id TEXT NOT NULL, model TEXT NOT NULL, target TEXT NOT NULL, metric TEXT NOT NULL,
    value REAL, n INTEGER, ci_low REAL, ci_high REAL, shots INTEGER, extra TEXT,
    PRIMARY KEY (job_id, metric)
);
"""


def _set_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Switch to WAL journaling, retrying while another connection holds the lock. SQLite returns "database
    is locked" at once, without calling the busy handler, when two processes open a fresh database and both
    change its journal mode (seen with two executors starting on one study), so `connect`'s timeout alone
    does not cover it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Store:
    """`root/results.db` and `root/jobs/<job id>/`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "results.db"
        self._conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        _set_wal(self._conn, timeout=60)
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)
        self._migrate()

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _tx(self):
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _migrate(self) -> None:
        """Stores written before claims existed lack the owner columns: add them (once, under the lock)."""

        def missing() -> list[tuple[str, str]]:
            have = {row[1] for row in self._conn.execute("PRAGMA table_info(jobs)")}
            return [(c, t) for c, t in (("owner", "TEXT"), ("heartbeat", "REAL")) if c not in have]

        if missing():
            with self._tx() as c:
                for col, typ in missing():  # again under the lock: another process may have added them
                    c.execute(f"ALTER TABLE jobs ADD COLUMN {col} {typ}")

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def status(self, job_id: str) -> str | None:
        row = self._conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row[0] if row else None

    def mark_running(self, job: Job) -> None:
        """Record `job` as running under this process, unconditionally (`claim` is the checked form)."""
        with self._tx() as c:
            self._set_running(c, job, str(current_owner()))

    def claim(self, job: Job, owner: str | None = None, lease: float = LEASE_S) -> bool:
        """Atomically take `job` for `owner` (default: this process) and mark it running. False when it is
        done, or running under another owner that is alive (see `owners.is_stale`); a pending, failed or
        stale job is taken. One transaction (BEGIN IMMEDIATE): two claimers never both win."""
        owner = owner or str(current_owner())
        with self._tx() as c:
            row = c.execute("SELECT status, owner, heartbeat FROM jobs WHERE id = ?", (job.id,)).fetchone()
            if row is not None:
                status, holder, beat = row
                if status == "done":
                    return False
                if status == "running" and holder != owner and not is_stale(holder, beat, lease):
                    return False
            self._set_running(c, job, owner)
        return True

    def release(self, job: Job, owner: str | None = None) -> None:
        """Give back `owner`'s claim on a job it did not finish (interrupted), so nobody waits on it."""
        with self._tx() as c:
            c.execute(
                "UPDATE jobs SET status = 'pending', owner = NULL WHERE id = ? AND owner = ? AND status = 'running'",
                (job.id, owner or str(current_owner())),
            )

    def holder(self, job_id: str) -> Owner | None:
        """The owner of a running job (None when it is not running or its owner is not recorded)."""
        row = self._conn.execute(
            "SELECT owner FROM jobs WHERE id = ? AND status = 'running'", (job_id,)
        ).fetchone()
        return Owner.parse(row[0]) if row and row[0] else None

    def heartbeat(self, owner: str | None = None) -> int:
        """Refresh the heartbeat of every job `owner` (default: this process) is running; returns how many."""
        with self._tx() as c:
            cur = c.execute(
                "UPDATE jobs SET heartbeat = ? WHERE owner = ? AND status = 'running'",
                (time.time(), owner or str(current_owner())),
            )
            return cur.rowcount

    def _set_running(self, c: sqlite3.Connection, job: Job, owner: str) -> None:
        now = time.time()
        c.execute(
            "INSERT INTO jobs (id, kind, name, params, status, started, owner, heartbeat) "
            "VALUES (?, ?, ?, ?, 'running', ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET status = 'running', error = NULL, started = excluded.started, "
            "owner = excluded.owner, heartbeat = excluded.heartbeat",
            (
                job.id,
                job.kind,
                job.name,
                json.dumps(params_json(job.params), sort_keys=True),  # typed (pydantic) or a mapping
                now,
                owner,
                now,
            ),
        )

    def mark_done(self, job: Job, result: dict[str, Any], scores: list[dict[str, Any]] = ()) -> None:
        """Commit the result (and any score rows) and the `done` status in one transaction."""
        with self._tx() as c:
            c.execute("DELETE FROM scores WHERE job_id = ?", (job.id,))
            c.executemany(
                "INSERT INTO scores (job_id, model, target, metric, value, n, ci_low, ci_high, shots, extra) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        job.id,
                        s["model"],
                        s["target"],
                        s["metric"],
                        s["value"],
                        s["n"],
                        s["ci_low"],
                        s["ci_high"],
                        s.get("shots", 0),
                        json.dumps(s.get("extra", {}), default=str),
                    )
                    for s in scores
                ],
            )
            c.execute(
                "UPDATE jobs SET status = 'done', finished = ?, result = ?, error = NULL WHERE id = ?",
                (time.time(), json.dumps(result, default=str), job.id),
            )

    def mark_failed(self, job: Job, error: str) -> None:
        """Record the failure, unless the job is already done (another executor's result is never lost)."""
        with self._tx() as c:
            c.execute(
                "UPDATE jobs SET status = 'failed', finished = ?, error = ? WHERE id = ? AND status != 'done'",
                (time.time(), error, job.id),
            )

    def forget(self, job_id: str) -> None:
        """Drop a job's record and scores: it is pending again (its files are the caller's to clear)."""
        with self._tx() as c:
            c.execute("DELETE FROM scores WHERE job_id = ?", (job_id,))
            c.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def result(self, job_id: str) -> dict[str, Any]:
        row = self._conn.execute(
            "SELECT result FROM jobs WHERE id = ? AND status = 'done'", (job_id,)
        ).fetchone()
        if row is None:
            raise KeyError(f"job {job_id} has no result")
        return json.loads(row[0])

    def jobs(self) -> list[dict[str, Any]]:
        cur = self._conn.execute("SELECT id, kind, name, status, error, started, finished FROM jobs")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def scores(self, job_ids: list[str] | None = None) -> list[dict[str, Any]]:
        """Score rows; of `job_ids` only, in that order (the plan's, not the order the jobs finished in,
        which differs between executors), else all in the order they were stored."""
        cur = self._conn.execute(
            "SELECT job_id, model, target, metric, value, n, ci_low, ci_high, shots, extra FROM scores"
        )
        cols = [d[0] for d in cur.description]
        rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
        if job_ids is not None:
            order = {job_id: i for i, job_id in enumerate(job_ids)}
            rows = sorted((r for r in rows if r["job_id"] in order), key=lambda r: order[r["job_id"]])
        return [dict(r, extra=json.loads(r["extra"] or "{}")) for r in rows]


class Heartbeat:
    """While open, a background thread refreshes this process's claims in the store at `root` every
    `every` seconds (its own connection), so executors on other hosts see the claims are alive."""

    def __init__(self, root: str | Path, every: float = HEARTBEAT_S) -> None:
        self._root, self._every, self._owner = root, every, str(current_owner())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spillover-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        store = Store(self._root)
        try:
            while not self._stop.wait(self._every):
                try:
                    store.heartbeat(self._owner)
                except sqlite3.Error as e:  # a busy store: the next beat tries again, well within the lease
                    log.warning("heartbeat to %s failed: %s", self._root, e)
        finally:
            store.close()
