"""Optimiser and learning-rate schedule for the training loop.

AdamW with weight decay only on parameters of dimension ≥ 2 (matrices, embeddings, LoRA A/B), never on
norms and biases; torch's fused kernel where it exists, else foreach. The schedule is a multiplier of the
base learning rate (torch LambdaLR), a pure function of the step so it can be checked by hand:

    W = round(warmup_ratio · n_steps)
    step k < W:      (k + 1) / (W + 1)                       linear warmup, never a zero-lr step
    step k ≥ W:      cosine: ½ (1 + cos(π (k − W) / (n_steps − W)))     or constant: 1
"""

from __future__ import annotations

import logging
import math
from functools import partial

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from spillover.errors import SpilloverError

log = logging.getLogger(__name__)
SCHEDULES = ("cosine", "constant")


def lr_multiplier(step: int, n_steps: int, warmup_ratio: float, schedule: str) -> float:
    """Factor applied to the base learning rate at optimiser step `step` (0-based)."""
    n_warmup = round(warmup_ratio * n_steps)
    if step < n_warmup:
        return (step + 1) / (n_warmup + 1)
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        progress = (step - n_warmup) / max(1, n_steps - n_warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise SpilloverError(f"schedule '{schedule}' is not allowed; use one of: {', '.join(SCHEDULES)}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, n_steps: int, warmup_ratio: float, schedule: str
) -> LambdaLR:
    lr_multiplier(0, n_steps, warmup_ratio, schedule)  # fail early on a bad schedule name
    fn = partial(lr_multiplier, n_steps=n_steps, warmup_ratio=warmup_ratio, schedule=schedule)
    return LambdaLR(optimizer, fn)


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float], eps: float
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; decay only on ≥2-D tensors."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise SpilloverError("the model has no trainable parameters (all have requires_grad=False)")
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    kernel = {"fused": True} if _fused_ok(params) else {"foreach": True}
    log.debug("AdamW with %s kernel over %d tensors", next(iter(kernel)), len(params))
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **kernel)


def _fused_ok(params: list[nn.Parameter]) -> bool:
    """torch's fused AdamW takes floating-point tensors on one device of a supported type."""
    devices = {p.device.type for p in params}
    return len(devices) == 1 and devices <= {"cpu", "cuda"} and all(p.is_floating_point() for p in params)
