"""Learning-rate schedule values by hand; weight-decay groups."""

from __future__ import annotations

import math

import pytest
import torch

from spillover.errors import SpilloverError
from spillover.training.optim import build_optimizer, build_scheduler, lr_multiplier


def test_warmup_then_cosine_by_hand():
    # 10 steps, warmup_ratio 0.2 → 2 warmup steps: 1/3, 2/3; cosine over the other 8 steps
    f = [lr_multiplier(k, 10, 0.2, "cosine") for k in range(10)]
    assert f[0] == pytest.approx(1 / 3) and f[1] == pytest.approx(2 / 3)
    assert f[2] == pytest.approx(1.0)
    assert f[6] == pytest.approx(0.5)  # half way through the cosine: ½(1 + cos(π/2))
    assert f[9] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))


def test_constant_and_no_warmup():
    assert [lr_multiplier(k, 4, 0.5, "constant") for k in range(4)] == pytest.approx([1 / 3, 2 / 3, 1, 1])
    assert lr_multiplier(0, 4, 0.0, "cosine") == 1.0


def test_scheduler_drives_optimizer_lr():
    w = torch.nn.Parameter(torch.zeros(2, 2))
    opt = torch.optim.AdamW([w], lr=0.1)
    sched = build_scheduler(opt, 10, 0.2, "cosine")
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.1 * lr_multiplier(k, 10, 0.2, "cosine") for k in range(10)])


def test_bad_schedule_name():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(SpilloverError, match="schedule 'linear'"):
        build_scheduler(opt, 10, 0.0, "linear")


def test_weight_decay_only_on_matrices():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.999), eps=1e-8)
    by_decay = {g["weight_decay"]: {tuple(p.shape) for p in g["params"]} for g in opt.param_groups}
    assert by_decay == {0.1: {(3, 3)}, 0.0: {(3,)}}
    assert sum(len(g["params"]) for g in opt.param_groups) == 4
