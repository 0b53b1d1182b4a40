"""Regional compilation: `torch.compile` of the decoder layers, for the training forward and backward.

A bf16 LoRA step on a CPU spends less than half its time in matmuls; the rest is elementwise work and
dtype casts around them (the fp32 residual stream, RMSNorm, rotary embeddings, SiLU, the fp32 adapter sum),
one small kernel each, forward and backward. Inductor fuses those into a few loops per layer. Compiling the
whole model took ~10 min on 2 cores; compiling the decoder layers ("regional compilation") traces ONE
layer, since every layer runs the same code on the same structure (`dynamic=True`: any batch shape), so
it costs one layer's compile, ~20–30 s per process on 2 cores, and later trainings on the same base in that
process reuse it. Measured on the embedded model (benchmarks/README.md): ~1.45× the eager training
throughput, loss curve within bf16 noise of eager.

This needs a C++ compiler for Inductor's CPU kernels. If compiling fails, training goes on eagerly with
one warning (`CompiledLayers.call`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

BACKEND = "inductor"


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The model's repeated blocks: transformers marks every decoder layer as a GradientCheckpointingLayer."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


class CompiledLayers:
    """Runs calls of `model` with its decoder layers compiled (`call`); outside those calls they run eagerly,
    so evaluation and other forward passes in the same process compile nothing."""

    def __init__(self, model: nn.Module):
        layers = decoder_layers(model)
        # one wrapper per layer; dynamo caches the compiled code per code object, shared by all of them
        self.compiled = [(m, torch.compile(m._call_impl, backend=BACKEND, dynamic=True)) for m in layers]
        self.failed = not layers
        if self.failed:
            log.warning("compile: no decoder layers found in %s; training runs eagerly", type(model).__name__)
        self.proven = False  # a compiled call went through

    def call(self, fn: Callable[[], Any]) -> Any:
        """`fn()` (a forward pass of the model) with compiled layers; eagerly if compiling fails."""
        if self.failed:
            return fn()
        try:
            for layer, compiled in self.compiled:
                layer._compiled_call_impl = compiled
            out = fn()
        except Exception as err:
            if self.proven:  # compiling worked before: this error is the model's, not the compiler's
                raise
            self.failed = True
            first_line = (str(err).splitlines() or [""])[0]
            log.warning("compile: compiling the decoder layers failed (%s: %s); training runs eagerly",
                        type(err).__name__, first_line)  # fmt: skip
        else:
            self.proven = True
            return out
        finally:
            for layer, _ in self.compiled:
                layer._compiled_call_impl = None
        return fn()
