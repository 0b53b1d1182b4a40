"""Acceptance checks on the real embedded model (`make test-slow`): CLI eval accuracy, and a `spillover train`
run killed mid-way that resumes from its checkpoint to the same final loss as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CONFIG = """model: embedded
tasks: [sst2]
limit: 48
output_dir: {out}
batch_size: 8
max_steps: 6
learning_rate: 5.0e-4
checkpoint_every: 2
"""


def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "spillover.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def test_cli_eval_sst2_accuracy(tmp_path):
    out = tmp_path / "r.json"
    proc = _cli(
        "eval",
        "--model",
        "embedded",
        "--tasks",
        "sst2",
        "--limit",
        "500",
        "--json",
        str(out),
        "--out",
        str(tmp_path / "preds"),
    )
    assert proc.wait(timeout=1200) == 0, proc.stdout.read()
    result = json.loads(out.read_text())["tasks"]["sst2"]
    assert result["n"] == 500 and result["value"] >= 0.75


def _final_loss(out: Path) -> float:
    return json.loads((out / "train_result.json").read_text())["final_loss"]


def test_killed_training_resumes_to_the_same_final_loss(tmp_path):
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    for name, out in (("a.yaml", straight), ("b.yaml", crashed)):
        (tmp_path / name).write_text(CONFIG.format(out=out))
    assert _cli("train", str(tmp_path / "a.yaml"), "--threads", "2").wait(timeout=1800) == 0

    proc = _cli("train", str(tmp_path / "b.yaml"), "--threads", "2", start_new_session=True)
    deadline = time.time() + 1800
    while not any((crashed / "checkpoints").glob("step-*")) and time.time() < deadline:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (crashed / "train_result.json").exists(), "killed before the end"
    assert _cli("train", str(tmp_path / "b.yaml"), "--threads", "2").wait(timeout=1800) == 0
    assert _final_loss(crashed) == _final_loss(straight)
