"""Small helpers over a model's trainable parameters (the ones the optimiser, checkpoints and regularisers see)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    """Trainable parameters by name; shared (tied) parameters appear once, under their first name."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def snapshot_trainable(model: nn.Module) -> dict[str, Tensor]:
    """Detached copies of the trainable parameters, e.g. θ0 for regularisers that pull towards the start."""
    return {n: p.detach().clone() for n, p in trainable(model).items()}


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in trainable(model).values())


@torch.no_grad()
def load_trainable_(model: nn.Module, state: dict[str, Tensor] | None) -> None:
    """Overwrite the trainable parameters with `state` (name → tensor; a training start other than θ0).
    None: leave them. Every trainable parameter must be in `state`."""
    if state is None:
        return
    params = trainable(model)
    missing = sorted(set(params) - set(state))
    assert not missing, f"start state lacks {missing[:3]}"
    for name, p in params.items():
        p.copy_(state[name].to(p.device, p.dtype))
