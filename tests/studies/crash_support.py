"""Crash safety: `spillover run` killed with SIGKILL at any point, then re-run, ends with exactly the results
of an uninterrupted run.

The kills are placed by watching the study folder from outside (never by sleeping blindly): during a
training job between two checkpoints, during an evaluation of a trained adapter, and during the analysis.
Each later run resumes from what the previous one left. The comparison is exact and goes beyond the
tables: per-step training losses, the adapter weights and every per-example log-probability.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
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
VOLATILE = {"tokens_per_s", "elapsed_s", "seconds"}  # wall-clock fields
COMPARED = ("predictions.jsonl", "train_log.jsonl", "train_result.json", "adapter/adapter_model.safetensors")


def test_sigkill_at_three_points_then_rerun_equals_uninterrupted(make_study):
    reference = _reference(make_study)
    study = make_study("crashed", **SETTINGS)
    out, plan = study.parent / "out", _plan(study)
    train = plan.by_kind("train")[0]
    train_dir = out / "jobs" / train.id

    # 1. during the first training job, between its checkpoints at steps 2 and 4
    _kill_when(study, lambda: (train_dir / "checkpoints" / "step-000002").exists())
    assert not (train_dir / "train_result.json").exists(), "the kill should land during training"
    assert train.id not in _done(out)

    # 2. during an evaluation of a trained adapter (the re-run first resumes the training)
    adapter_evals = {j.id for j in plan.by_kind("eval") if j.deps}
    stderr = _kill_when(study, lambda: bool(adapter_evals & _running(out)))
    assert "resuming from" in stderr and "step-000002" in stderr, stderr[-2000:]
    assert train.id in _done(out) and adapter_evals & _running(out), (
        "the kill should land during an evaluation"
    )

    # 3. during the analysis
    analyse = plan.by_kind("analyse")[0].id
    _kill_when(study, lambda: analyse in _running(out))
    assert analyse not in _done(out)

    _run_to_completion(study)
    _assert_same_results(out, reference, plan)


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun_equals_uninterrupted(make_study):
    """Six studies, each killed twice at random points (after a random number of finished jobs, plus a random
    delay into the next), then finished: every one ends with the uninterrupted run's results."""
    reference = _reference(make_study)
    for trial in range(6):
        rng = random.Random(trial)
        study = make_study(f"crashed-{trial}", **SETTINGS)
        out, plan = study.parent / "out", _plan(study)
        for _ in range(2):
            n_done = rng.randrange(len(_done(out)), len(plan))
            ready = _after(lambda k=n_done, o=out: len(_done(o)) >= k, rng.uniform(0, 0.5))
            if _kill_when(study, ready, may_finish=True) is None:
                break  # it finished first
        _run_to_completion(study)
        _assert_same_results(out, reference, plan)


def _after(condition: Callable[[], bool], delay: float) -> Callable[[], bool]:
    """True from `delay` seconds after `condition()` was first seen true."""
    seen: list[float] = []

    def ready() -> bool:
        if not seen and condition():
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() - seen[0] >= delay

    return ready


# ---- running the study ---------------------------------------------------------------------------------


def _reference(make_study) -> Path:
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


def _plan(study: Path) -> Plan:
    return prepare(*load_study(study))[1]


def _command(study: Path) -> list[str]:
    return [sys.executable, "-m", "spillover.cli", "run", str(study), "--threads", str(THREADS)]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(THREADS), "TOKENIZERS_PARALLELISM": "false"}


def _kill_when(
    study: Path, ready: Callable[[], bool], timeout: float = 120, may_finish: bool = False
) -> str | None:
    """Start `spillover run`, SIGKILL it as soon as `ready()`; returns its stderr (None: it finished first)."""
    log = study.parent / f"run-{time.monotonic_ns()}.log"
    with log.open("w") as err:
        proc = subprocess.Popen(_command(study), cwd=study.parent, env=_env(), stdout=err, stderr=err)
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


def _run_to_completion(study: Path) -> None:
    done = subprocess.run(
        _command(study), cwd=study.parent, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]


# ---- reading the store from outside (the run may be writing it) -----------------------------------------


def _statuses(out: Path) -> dict[str, str]:
    if not (out / "results.db").exists():
        return {}
    try:
        conn = sqlite3.connect(out / "results.db", timeout=5)
        try:
            return dict(conn.execute("SELECT id, status FROM jobs").fetchall())
        finally:
            conn.close()
    except sqlite3.OperationalError:  # the schema is not created yet
        return {}


def _running(out: Path) -> set[str]:
    return {j for j, s in _statuses(out).items() if s == "running"}


def _done(out: Path) -> set[str]:
    return {j for j, s in _statuses(out).items() if s == "done"}


# ---- comparing with the uninterrupted run --------------------------------------------------------------


def _assert_same_results(out: Path, reference: Path, plan: Plan) -> None:
    conn = sqlite3.connect(out / "results.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        statuses = dict(conn.execute("SELECT id, status FROM jobs").fetchall())
    finally:
        conn.close()
    assert {statuses.get(j.id) for j in plan} == {"done"}, statuses
    tables = sorted(p.name for p in (reference / "tables").glob("*.csv"))
    assert {"scores.csv", "delta.csv"} <= set(tables)
    for table in tables:  # scores, delta, PCA, attribution, dataset statistics, ...: all of them
        assert (out / "tables" / table).read_text() == (reference / "tables" / table).read_text(), table
    assert _stored_scores(out) == _stored_scores(reference)
    mine, theirs = _job_folders(out), _job_folders(reference)
    assert mine.keys() == theirs.keys()
    for name, folder in theirs.items():
        for rel in COMPARED:
            if (folder / rel).exists():
                assert _content(mine[name] / rel) == _content(folder / rel), f"{name}: {rel} differs"


def _stored_scores(out: Path) -> list[tuple]:
    conn = sqlite3.connect(out / "results.db")
    try:
        rows = conn.execute(
            "SELECT j.name, s.model, s.target, s.metric, s.value, s.n, s.ci_low, s.ci_high, s.shots "
            "FROM scores s JOIN jobs j ON j.id = s.job_id ORDER BY j.name, s.metric"
        ).fetchall()
    finally:
        conn.close()
    assert rows
    return rows


def _job_folders(out: Path) -> dict[str, Path]:
    """job name -> job folder (names, unlike ids, do not depend on where the study's files live)."""
    conn = sqlite3.connect(out / "results.db")
    try:
        names = dict(conn.execute("SELECT name, id FROM jobs WHERE kind IN ('train', 'eval')").fetchall())
    finally:
        conn.close()
    return {name: out / "jobs" / job_id for name, job_id in names.items()}


def _content(path: Path):
    """A file's content with wall-clock fields left out; tensors as raw bytes (exact equality)."""
    if path.suffix == ".safetensors":
        return {k: (str(v.dtype), tuple(v.shape), v.numpy().tobytes()) for k, v in load_file(path).items()}
    if path.suffix == ".json":
        return {k: v for k, v in json.loads(path.read_text()).items() if k not in VOLATILE}
    if path.name == "train_log.jsonl":
        return [
            {k: v for k, v in json.loads(line).items() if k not in VOLATILE}
            for line in path.read_text().splitlines()
        ]
    return path.read_text()
