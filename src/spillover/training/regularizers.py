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
    """weight · Σ ||θ − θ0||² over the trainable parameters only (methods.md §4.4, the L2 baseline).

    Frozen parameters cannot move, so they are neither regularised nor copied into `init`; tied parameters
    count once. Differences and squares are summed in fp32 even for bf16 parameters. With LoRA the
    trainable parameters are the adapter's A and B, so the penalty is ||A − A0||² + ||B||² (B0 = 0), not the
    norm of the weight update B·A; with full fine-tuning θ0 is one copy of the model (see docs/training.md).
    `weight` is validated at the config edge (config.TrainSettings).
    """
    params = trainable(model)
    total = torch.zeros((), device=next(iter(params.values())).device)
    for name, p in params.items():
        total = total + (p.float() - init[name].float()).pow(2).sum()
    return weight * total
