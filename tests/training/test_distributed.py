"""Data-parallel training (training.distributed): 2 CPU processes (gloo) train the run one process trains.

The plan: 20 sequences, batch_size 2, grad_accum 3, 2 epochs → 10 micro-batches an epoch, optimiser steps
of 3, 3, 3 and 1 micro-batches. With 2 ranks, rank 0 takes 2 and rank 1 one micro-batch of a full step,
and rank 1 has nothing to do in every 4th step, so uneven shares and an idle rank are both covered.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from tests.conftest import make_tiny_llama, make_tokenizer
from tests.training.conftest import make_toy_sequences, params

from spillover.data.mixture import Schedule
from spillover.errors import SpilloverError
from spillover.models.adapters import apply_lora
from spillover.training.distributed import World, _buckets, refuse_launch, threads_per_process
from spillover.training.loop import train
from spillover.training.mixture_plan import MixturePlan
from spillover.training.params import trainable

N_SEQ, N_STEPS = 20, 8
CASES = {  # every case also checks that the regulariser and per-micro-batch objectives stay exact
    "lora_talr_l2": dict(method="lora", objective="talr", regularizers={"l2_to_init": {"weight": 0.5}}),
    "full": dict(method="full", lr=1e-3),  # at 1e-2 full FT is chaotic: float noise grows to 1e-5 in 6 steps
    "lora_flow": dict(method="lora", objective="flow"),
    "lora_mixture": dict(
        method="lora", mixture=True
    ),  # a MixturePlan: 2 tasks (8 + 12 sequences) mixed per batch
}


def _model(method: str, vocab: int, dropout: float = 0.0):
    model = make_tiny_llama(vocab)
    if method == "lora":
        return apply_lora(model, r=4, alpha=8, dropout=dropout, seed=0)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def _params(case: dict, **extra):
    settings = {k: v for k, v in case.items() if k not in ("method", "mixture")}
    settings = {"lr": 1e-2, "batch_size": 2, "grad_accum": 3, "epochs": 2, "max_steps": None} | settings
    return params(**settings, **extra)


def _run(case: dict, out: Path, **extra) -> dict[str, torch.Tensor]:
    tok = make_tokenizer()
    model = _model(case["method"], len(tok), extra.pop("dropout", 0.0))
    hooks, seqs = extra.pop("hooks", ()), make_toy_sequences(tok, N_SEQ)
    plan = None
    if case.get("mixture"):
        plan = MixturePlan(
            ["a", "b"],
            [8, 12],
            [len(s.input_ids) for s in seqs],
            Schedule("constant", ((0.3, 0.7),)),
            batch_size=2,
            grad_accum=3,
            seed=0,
            n_steps=N_STEPS,
            sampling="batch",
        )
    train(model, tok, seqs, _params(case, **extra), out, hooks=hooks, plan=plan)
    return {k: v.detach().clone() for k, v in trainable(model).items()}


class _Crash:
    """A hook that stops training before the optimiser step `at` (on every rank alike)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def before_optimizer_step(self, model, optimizer, step: int) -> None:
        if step == self.at:
            raise RuntimeError("simulated crash")

    def after_optimizer_step(self, model, optimizer, step: int) -> None:
        pass


def _record_writes(under: Path, into: list[str]):
    """An audit hook noting every file-system change under `under` (opens for writing, mkdir, rename...)."""
    prefix = str(under)
    changes = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate"}

    def hook(event: str, args) -> None:
        if event == "open":
            path, mode, flags = args
            writable = os.O_WRONLY | os.O_RDWR | os.O_CREAT
            writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & writable)
        else:
            path, writes = (args[0] if args else None), event in changes
        if writes and isinstance(path, str | os.PathLike) and str(path).startswith(prefix):
            into.append(f"{event} {path}")

    return hook


def _worker(rank: int, world_size: int, root: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{root}/rendezvous", rank=rank, world_size=world_size)
    root_dir, written = Path(root), []
    sys.addaudithook(_record_writes(root_dir / "runs", written))
    try:
        for name, case in CASES.items():
            save_file(_run(case, root_dir / "runs" / name), str(root_dir / f"rank{rank}-{name}.safetensors"))
        lora_dropout = dict(method="lora", checkpoint_every=2)
        full = _run(lora_dropout, root_dir / "runs" / "dropout-whole", dropout=0.1)
        with pytest.raises(RuntimeError, match="simulated crash"):
            _run(lora_dropout, root_dir / "runs" / "dropout-resumed", dropout=0.1, hooks=[_Crash(5)])
        resumed = _run(lora_dropout, root_dir / "runs" / "dropout-resumed", dropout=0.1)
        save_file(full, str(root_dir / f"rank{rank}-dropout-whole.safetensors"))
        save_file(resumed, str(root_dir / f"rank{rank}-dropout-resumed.safetensors"))
    finally:
        (root_dir / f"rank{rank}-writes.json").write_text(json.dumps(written))
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """Every case trained once by 2 spawned processes; their outputs and what each rank wrote."""
    root = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, str(root)), nprocs=2, join=True)
    return root


def _losses(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.integration
@pytest.mark.parametrize("name", CASES)
def test_two_processes_train_what_one_process_trains(two_ranks, tmp_path, name):
    one = _run(CASES[name], tmp_path / name)
    single, double = _losses(tmp_path / name), _losses(two_ranks / "runs" / name)
    assert [r["step"] for r in double] == list(range(1, N_STEPS + 1))
    for a, b in zip(single, double, strict=True):
        assert (a["n_tokens"], a["n_input_tokens"]) == (b["n_tokens"], b["n_input_tokens"])  # global step
        for key in ("loss", "grad_norm", "token_acc", *[k for k in a if k.startswith(("reg/", "talr/"))]):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (a["step"], key)
    rank0 = load_file(two_ranks / f"rank0-{name}.safetensors")
    rank1 = load_file(two_ranks / f"rank1-{name}.safetensors")
    assert set(rank0) == set(one)
    for k in one:
        assert torch.equal(rank0[k], rank1[k]), k  # the ranks stay in lock-step
    # Adam divides by √v: where a gradient is almost 0 (LoRA B, cancellations) summation-order noise can
    # move an element by a fraction of a step (≤ lr); overall the weights agree to float noise
    diff = torch.cat([(rank0[k] - v).flatten() for k, v in one.items()])
    norm = torch.cat([v.flatten() for v in one.values()]).norm()
    assert diff.norm() / norm < 1e-5 and diff.abs().max() < 1e-4, (diff.norm() / norm, diff.abs().max())


@pytest.mark.integration
def test_talr_and_regulariser_are_not_trivially_equal(two_ranks):
    """The regulariser contributes (a double count would show), and TALR's τ varies between steps."""
    log = _losses(two_ranks / "runs" / "lora_talr_l2")
    assert log[-1]["reg/l2_to_init"] > 1e-4
    assert len({round(r["talr/tau"], 6) for r in log}) > 1


@pytest.mark.integration
def test_only_rank_0_writes(two_ranks):
    rank0 = json.loads((two_ranks / "rank0-writes.json").read_text())
    rank1 = json.loads((two_ranks / "rank1-writes.json").read_text())
    assert any("train_log.jsonl" in w for w in rank0) and any("sequence_weights.json" in w for w in rank0)
    assert rank1 == []
    for name in CASES:
        assert (two_ranks / "runs" / name / "train_result.json").exists()
    assert (two_ranks / "runs" / "lora_talr_l2" / "adapter").is_dir()
    assert (two_ranks / "runs" / "full" / "model").is_dir()


@pytest.mark.integration
def test_resume_with_dropout_is_exact_across_ranks(two_ranks):
    """A crash at step 6 (checkpoint at 4), then a restart: the same weights and log as one go."""
    whole, resumed = (load_file(two_ranks / f"rank0-dropout-{k}.safetensors") for k in ("whole", "resumed"))
    for k in whole:
        assert torch.equal(whole[k], resumed[k]), k
    curves = [
        [(r["loss"], r["grad_norm"]) for r in _losses(two_ranks / "runs" / f"dropout-{k}")]
        for k in ("whole", "resumed")
    ]
    assert curves[0] == curves[1] and len(curves[0]) == N_STEPS


def test_micro_batches_are_dealt_round_robin():
    assert World(0, 2).share(3) == [0, 2] and World(1, 2).share(3) == [1]
    assert World(1, 2).share(1) == [] and World(0, 1).share(3) == [0, 1, 2]


def test_more_processes_than_micro_batches_is_an_error():
    World(0, 2).check_grad_accum(2)
    with pytest.raises(SpilloverError, match=r"grad_accum=1 with 2 processes.*multiple of 2"):
        World(1, 2).check_grad_accum(1)


def test_gradient_buckets_group_by_dtype_and_size(monkeypatch):
    monkeypatch.setattr("spillover.training.distributed.BUCKET_BYTES", 64)
    grads = [
        torch.zeros(8),
        torch.zeros(8),
        torch.zeros(4, dtype=torch.float64),
        torch.zeros(2, dtype=torch.float64),
    ]
    assert [[g.numel() for g in b] for b in _buckets(grads)] == [[8, 8], [4, 2]]
    assert [len(b) for b in _buckets([torch.zeros(20), torch.zeros(1)])] == [1, 1]


def test_launch_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(SpilloverError, match="spillover run.*spillover train"):
        refuse_launch("spillover run")
    assert threads_per_process() == max(1, (os.cpu_count() or 1) // 2)
    monkeypatch.setenv("WORLD_SIZE", "1")
    refuse_launch("spillover run")


def test_too_few_micro_batches_fail_before_anything_is_written(monkeypatch, tmp_path, sentiment_task_file):
    from spillover import api
    from spillover.config import TrainSpec

    monkeypatch.setattr(api.distributed, "join", lambda precision: precision)  # as if launched with 2
    monkeypatch.setattr(api.distributed, "current", lambda: World(1, 2))
    spec = TrainSpec(
        model="unused",
        tasks=["toy_sentiment"],
        tasks_file=str(sentiment_task_file),
        output_dir=str(tmp_path / "out"),
        grad_accum=1,
    )
    with pytest.raises(SpilloverError, match="grad_accum=1 with 2 processes"):
        api.run_training(spec)
    assert not (tmp_path / "out").exists()
