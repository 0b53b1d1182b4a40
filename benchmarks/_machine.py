"""What the side-by-side benchmarks measure besides wall time: the machine's matmul peak, the model's linear
FLOPs and the token positions a model actually runs.

Positions are counted at the input embeddings, so they include padding, a shared prefix computed once
and anything else the decoder layers see; they are the same measure on both sides of a comparison.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def loop_tflops(fn: Callable[[], object], flop: float, seconds: float = 3.0) -> float:
    """TFLOP/s of calling `fn` (worth `flop` FLOP a call) in a loop for about `seconds`, after one warm-up."""
    fn()
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        done += 1
    return flop * done / (time.perf_counter() - t0) / 1e12


def matmul_peak_tflops(dtype: torch.dtype, seconds: float = 3.0, n: int = 4096) -> float:
    """TFLOP/s of an n x n matmul loop on this process's threads: the best rate this machine gives now."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return loop_tflops(lambda: a @ b, 2 * n**3, seconds)


def linear_params(model) -> int:
    """Weights of the decoder's linear layers (LoRA factors, embeddings and the output head excluded)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return sum(
        mod.weight.numel()
        for name, mod in base.model.named_modules()
        if isinstance(mod, torch.nn.Linear) and "lora_" not in name
    )


class PositionCounter:
    """Counts the token positions `model`'s input embeddings hand to the decoder while active, and notes
    when the first forward pass started (`first`, a `time.perf_counter()` value): what comes before it is
    start-up (task set-up, data loading, tokenising)."""

    def __init__(self, model) -> None:
        self.model, self.positions, self.first, self._hook = model, 0, None, None

    def _count(self, _module, _inputs, output: torch.Tensor) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        self.positions += output.shape[0] * output.shape[1]

    def __enter__(self) -> PositionCounter:
        self._hook = self.model.get_input_embeddings().register_forward_hook(self._count)
        return self

    def __exit__(self, *exc) -> None:
        self._hook.remove()


def five_x(flops: float, competitor_seconds: float, peak_tflops: float) -> dict:
    """What 5x the competitor asks of this machine: the time it allows, the time the FLOPs spillover ran
    would take if every one of them ran at the matmul loop's peak, and the peak fraction it needs."""
    target, floor = competitor_seconds / 5, flops / (peak_tflops * 1e12)
    return {
        "target_s": round(target, 2),
        "matmul_floor_s": round(floor, 2),
        "mfu_needed": round(floor / target, 4),
    }
