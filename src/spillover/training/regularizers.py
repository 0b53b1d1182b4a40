"""Regularisers added to the training loss, by short registry name.

Signature: `(model, init: dict[str, Tensor], **params) -> Tensor` (a scalar). `init` is a detached copy of
the trainable parameters taken once when training starts (before any resume), keyed by parameter name;
the loop takes it only when at least one regulariser is configured. Regularisers are evaluated once per
optimiser step (not per micro-batch), so their weight does not depend on gradient accumulation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor, nn

from spillover.registry import Registry
from spillover.training.params import trainable

Regularizer = Callable[..., Tensor]
REGULARIZERS: Registry[Regularizer] = Registry("regularizer")


@REGULARIZERS.register("l2_to_init")
def l2_to_init(model: nn.Module, init: dict[str, Tensor], weight: Annotated[float, Field(ge=0)]) -> Tensor:
    """weight · Σ ||θ − θ0||² over trainable parameters (methods.md §4.4, the L2 baseline)."""
    params = trainable(model)
    total = torch.zeros((), device=next(iter(params.values())).device)
    for name, p in params.items():
        total = total + (p - init[name]).pow(2).sum()
    return weight * total
