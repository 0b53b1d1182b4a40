"""The results store: one SQLite file (WAL, transactions) plus one artifact folder per job.

A job is `done` only when its result row is committed, and that commit is the last thing a job does,
so a crash at any point leaves the job pending (or running, which is treated as pending) and a re-run
redoes exactly the unfinished work. Artifacts are written into the job folder before that commit.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from spillover.engine.plan import Job

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, params TEXT NOT NULL,
    status TEXT NOT NULL, error TEXT, started REAL, finished REAL, result TEXT
);
CREATE TABLE IF NOT EXISTS scores (
    job_id TEXT NOT NULL, model TEXT NOT NULL, target TEXT NOT NULL, metric TEXT NOT NULL,
    value REAL, n INTEGER, ci_low REAL, ci_high REAL, shots INTEGER, extra TEXT,
    PRIMARY KEY (job_id, metric)
);
"""


class Store:
    """`root/results.db` and `root/jobs/<job id>/`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "results.db"
        self._conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)

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

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def status(self, job_id: str) -> str | None:
        row = self._conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row[0] if row else None

    def mark_running(self, job: Job) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO jobs (id, kind, name, params, status, started) VALUES (?, ?, ?, ?, 'running', ?) "
                "ON CONFLICT(id) DO UPDATE SET status = 'running', error = NULL, started = excluded.started",
                (
                    job.id,
                    job.kind,
                    job.name,
                    json.dumps(job.params, sort_keys=True, default=str),
                    time.time(),
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
        with self._tx() as c:
            c.execute(
                "UPDATE jobs SET status = 'failed', finished = ?, error = ? WHERE id = ?",
                (time.time(), error, job.id),
            )

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
