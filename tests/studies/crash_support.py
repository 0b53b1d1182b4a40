"""Helpers of the crash tests: run `spillover run` in a subprocess and SIGKILL it when a condition on the
study folder holds (watched from outside, never by sleeping blindly), check what a kill left, and compare a
finished study with the uninterrupted reference.

Compared exactly: job statuses, every stored result (wall-clock fields and the folder's own path left
out), every score row, every table, report.html (the folder's path normalised), and per job the
per-step training losses, the adapter weights (raw bytes) and every per-example prediction.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file

from spillover.engine.plan import Plan
from spillover.studies.run import load_study, prepare, run_study

# two sources x two targets; 8 steps with a checkpoint every 2 so a kill can land between checkpoints
SETTINGS = {
    "sources": "[toy_a, toy_b]",
    "targets": "[toy_a, toy_gen]",
    "train": "{limit: 16, batch_size: 4, max_steps: 8, learning_rate: 0.05, checkpoint_every: 2}",
}
THREADS = 1  # the same thread count in every run: float reductions may depend on it
# Wall-clock measurements: the only fields that differ between two uninterrupted runs.
VOLATILE = {"tokens_per_s", "elapsed_s", "seconds"}
COMPARED = ("predictions.jsonl", "train_log.jsonl", "train_result.json", "adapter/adapter_model.safetensors")
PHASES = {"train": "train", "eval": "eval", "analyse": "analysis", "stats": "stats"}


# ---- running the study ---------------------------------------------------------------------------------


def run_reference(make_study) -> Path:
    """The uninterrupted run, in this process, with the thread count the subprocesses use."""
    kind, spec = load_study(make_study("reference", **SETTINGS))
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        summary, out = run_study(kind, spec)
    finally:
        torch.set_num_threads(threads)
    assert summary.ok
    return out


def plan_of(study: Path) -> Plan:
    return prepare(*load_study(study))[1]


def command(study: Path) -> list[str]:
    return [sys.executable, "-m", "spillover.cli", "run", str(study), "--threads", str(THREADS)]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(THREADS), "TOKENIZERS_PARALLELISM": "false"}


def kill_when(
    study: Path, ready: Callable[[], bool], timeout: float = 120, may_finish: bool = False
) -> str | None:
    """Start `spillover run`, SIGKILL it as soon as `ready()`; returns its stderr (None: it finished first)."""
    log = study.parent / f"run-{time.monotonic_ns()}.log"
    with log.open("w") as err:
        proc = subprocess.Popen(command(study), cwd=study.parent, env=env(), stdout=err, stderr=err)
        try:
            deadline = time.monotonic() + timeout
            while not ready():
                if proc.poll() is not None:
                    assert may_finish, (
                        f"the run ended (exit {proc.returncode}) before the kill point:\n{log.read_text()[-3000:]}"
                    )
                    return None
                assert time.monotonic() < deadline, (
                    f"kill point not reached in {timeout}s:\n{log.read_text()[-3000:]}"
                )
                time.sleep(0.003)
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:  # not killed yet: an assertion above failed
                proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL or may_finish, proc.returncode
    return log.read_text()


def after(condition: Callable[[], bool], delay: float) -> Callable[[], bool]:
    """True from `delay` seconds after `condition()` was first seen true."""
    seen: list[float] = []

    def ready() -> bool:
        if not seen and condition():
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() - seen[0] >= delay

    return ready


def run_to_completion(study: Path) -> None:
    done = subprocess.run(
        command(study), cwd=study.parent, env=env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]


# ---- reading the store from outside (the run may be writing it) -----------------------------------------


def _rows(out: Path, sql: str) -> list[tuple]:
    if not (out / "results.db").exists():
        return []
    try:
        conn = sqlite3.connect(out / "results.db", timeout=5)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()
    except sqlite3.OperationalError:  # the schema is not created yet
        return []


def statuses(out: Path) -> dict[str, str]:
    return dict(_rows(out, "SELECT id, status FROM jobs"))


def running(out: Path) -> set[str]:
    return {j for j, s in statuses(out).items() if s == "running"}


def done(out: Path) -> set[str]:
    return {j for j, s in statuses(out).items() if s == "done"}


def phase_now(out: Path) -> str:
    """The phase the study is in (after a kill: the one the kill hit), from the job marked running."""
    kinds = {kind for kind, status in _rows(out, "SELECT kind, status FROM jobs") if status == "running"}
    assert len(kinds) <= 1, f"one executor runs one job at a time: {kinds}"
    return PHASES[kinds.pop()] if kinds else "between jobs"


# ---- what a kill may leave ----------------------------------------------------------------------------


def assert_consistent_after_kill(out: Path, reference: Path) -> None:
    """The store is intact, and everything a reader trusts is complete and final: the results and files of
    every done job, tables/ and report.html (present only if written whole), each job's latest checkpoint."""
    if not (out / "results.db").exists():
        return  # killed before the store was created
    conn = sqlite3.connect(out / "results.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = conn.execute("SELECT name, status FROM jobs").fetchall()
    finally:
        conn.close()
    assert {s for _, s in rows} <= {"running", "done"}, rows  # a kill is not a failure
    finished = {name for name, s in rows if s == "done"}
    assert _stored_scores(out, finished) == _stored_scores(reference, finished)
    assert _results(out, finished) == _results(reference, finished)
    mine, theirs = job_folders(out), job_folders(reference)
    for name in finished & theirs.keys():
        for rel in COMPARED:
            if (theirs[name] / rel).exists():
                assert _content(mine[name] / rel) == _content(theirs[name] / rel), f"{name}: {rel} differs"
    for folder in (out / "jobs").glob("*/checkpoints"):
        steps = sorted(folder.glob("step-*"))
        if steps:  # the one a resume loads is complete
            assert {p.name for p in steps[-1].iterdir()} == {
                "trainable.safetensors",
                "state.pt",
                "progress.json",
            }
            json.loads((steps[-1] / "progress.json").read_text())
    if (out / "tables").exists():
        _assert_same_tables(out, reference)
    if (out / "report.html").exists():
        assert _report(out) == _report(reference)


# ---- comparing with the uninterrupted run --------------------------------------------------------------


def assert_same_results(out: Path, reference: Path, plan: Plan) -> None:
    conn = sqlite3.connect(out / "results.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        by_id = dict(conn.execute("SELECT id, status FROM jobs").fetchall())
    finally:
        conn.close()
    assert {by_id.get(j.id) for j in plan} == {"done"}, by_id
    everything = {j.name for j in plan}
    assert _stored_scores(out, everything) == _stored_scores(reference, everything)
    assert _results(out, everything) == _results(reference, everything)
    _assert_same_tables(out, reference)
    assert _report(out) == _report(reference)
    mine, theirs = job_folders(out), job_folders(reference)
    assert mine.keys() == theirs.keys()
    for name, folder in theirs.items():
        for rel in COMPARED:
            if (folder / rel).exists():
                assert _content(mine[name] / rel) == _content(folder / rel), f"{name}: {rel} differs"


def _assert_same_tables(out: Path, reference: Path) -> None:
    tables = sorted(p.name for p in (reference / "tables").iterdir())
    assert {"scores.csv", "delta.csv"} <= set(tables)
    assert sorted(p.name for p in (out / "tables").iterdir()) == tables
    for table in tables:  # scores, delta, PCA, attribution, dataset statistics, ... (CSV and Parquet)
        assert (out / "tables" / table).read_bytes() == (reference / "tables" / table).read_bytes(), table


def _report(out: Path) -> str:
    """report.html with the study's own folder written as <study> (the one difference between runs)."""
    return (out / "report.html").read_text().replace(str(out.parent), "<study>")


def _stored_scores(out: Path, names: set[str]) -> list[tuple]:
    rows = _rows(
        out,
        "SELECT j.name, s.model, s.target, s.metric, s.value, s.n, s.ci_low, s.ci_high, s.shots "
        "FROM scores s JOIN jobs j ON j.id = s.job_id WHERE j.status = 'done' ORDER BY j.name, s.metric",
    )
    return [r for r in rows if r[0] in names]


def _results(out: Path, names: set[str]) -> dict[str, object]:
    """job name -> stored result, without wall-clock fields; the folder's path written as <study>."""
    rows = _rows(out, "SELECT name, result FROM jobs WHERE status = 'done'")
    return {
        name: _without_volatile(json.loads(text.replace(str(out.parent), "<study>")))
        for name, text in rows
        if name in names
    }


def _without_volatile(value):
    if isinstance(value, dict):
        return {k: _without_volatile(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_without_volatile(v) for v in value]
    return value


def job_folders(out: Path) -> dict[str, Path]:
    """job name -> job folder (names, unlike ids, do not depend on where the study's files live)."""
    names = dict(_rows(out, "SELECT name, id FROM jobs WHERE kind IN ('train', 'eval')"))
    return {name: out / "jobs" / job_id for name, job_id in names.items()}


def job_seconds(out: Path) -> dict[str, float]:
    """job name -> how long it ran in the reference (to aim kills inside a job)."""
    return {name: f - s for name, s, f in _rows(out, "SELECT name, started, finished FROM jobs")}


def _content(path: Path):
    """A file's content with wall-clock fields left out; tensors as raw bytes (exact equality)."""
    if path.suffix == ".safetensors":
        return {k: (str(v.dtype), tuple(v.shape), v.numpy().tobytes()) for k, v in load_file(path).items()}
    if path.suffix == ".json":
        return _without_volatile(json.loads(path.read_text()))
    if path.name == "train_log.jsonl":
        return [_without_volatile(json.loads(line)) for line in path.read_text().splitlines()]
    return path.read_text()
