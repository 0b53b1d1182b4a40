"""`spillover train` launched as 2 CPU processes by torchrun and by accelerate: the run one process trains,
and rank 0 alone writes, evaluates and prints. Slow tier (`make test-slow`): each launch starts 3 Python
processes; tests/training/test_distributed.py covers the same loop in the default tier."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import spillover
from spillover.api import run_training
from spillover.config import TrainSpec, load_spec

LAUNCHERS = {  # {port}: a free TCP port for the rendezvous
    "torchrun": [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "{port}",
    ],
    # accelerate without a GPU needs --multi_gpu (despite its name) to start several processes
    "accelerate": [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--main_process_port",
        "{port}",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ],
}


def _config(tmp_path: Path, model: Path, tasks_file: Path, out: Path) -> Path:
    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        f"model: {model}\nmethod: lora\ntasks: [toy_sentiment]\ntasks_file: {tasks_file}\noutput_dir: {out}\n"
        "lora: {r: 4, alpha: 8}\nlearning_rate: 1.0e-2\nbatch_size: 2\ngrad_accum: 3\nepochs: 2\n"
        "precision: fp32\ndevice: cpu\neval_tasks: [toy_sentiment]\neval_limit: 4\ncheckpoint_every: 2\n"
    )
    return cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_spillover_train_under_a_launcher(tmp_path, tiny_model_dir, sentiment_task_file, launcher):
    out = tmp_path / "ddp"
    cfg = _config(tmp_path, tiny_model_dir, sentiment_task_file, out)
    env = os.environ | {"PYTHONPATH": str(Path(spillover.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    port = str(_free_port())
    cmd = [
        *(a.replace("{port}", port) for a in LAUNCHERS[launcher]),
        "-m",
        "spillover.cli",
        "train",
        str(cfg),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained in") == 1 and done.stdout.count("accuracy") == 1, done.stdout

    one = tmp_path / "one"
    run_training(load_spec(TrainSpec, str(cfg), [f"output_dir={one}"]))
    single, double = _log(one), _log(out)
    assert [r["step"] for r in double] == [1, 2, 3, 4, 5, 6]  # 16 rows: 8 micro-batches, steps of 3, 3, 2
    for a, b in zip(single, double, strict=True):
        assert b["n_tokens"] == a["n_tokens"]
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in one.iterdir())
    assert (out / "eval" / "results.json").exists() and (out / "eval-base" / "results.json").exists()


@pytest.mark.slow
def test_a_study_refuses_a_launcher(tmp_path):
    env = os.environ | {"PYTHONPATH": str(Path(spillover.__file__).parents[1])}
    cmd = [
        *(a.replace("{port}", str(_free_port())) for a in LAUNCHERS["torchrun"]),
        "-m",
        "spillover.cli",
        "run",
        str(tmp_path / "study.yaml"),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "launch one training job with `spillover train`" in done.stderr
