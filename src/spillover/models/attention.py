"""Which attention kernel a CPU training step uses: by the size of the batch's score matrices.

PyTorch's CPU flash-attention kernel (what `sdpa` picks for a padded training batch) has a slow backward
for short sequences: on the embedded model at batch 8 × ~80 tokens it took 20% of a LoRA step, and the
plain matmul + softmax of transformers' `eager` attention made training 1.3× faster (median of five
alternating runs in one process, `benchmarks/attention_kernels.py`; figures in benchmarks/README.md).
`eager` stores the (B, heads, T, T) probabilities for backward, so it pays off only while they are small:
at 8 × 256 tokens the two were even, and beyond that the memory grows quadratically. Hence the rule:
eager when B·T² ≤ `EAGER_MAX_SCORES` (batch 8 up to 128 tokens, batch 32 up to 64), sdpa otherwise.
GPUs and other attention implementations (flash_attention_2, ...) are left alone; inference keeps sdpa
(its forward kernel is not the slow part).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

EAGER_MAX_SCORES = 8 * 128 * 128


def training_attention(device: torch.device, batch: int, width: int, current: str) -> str:
    """The attention implementation for one CPU training micro-batch of `batch` rows × `width` tokens."""
    if device.type != "cpu" or current != "sdpa":
        return current
    return "eager" if batch * width * width <= EAGER_MAX_SCORES else "sdpa"


@contextmanager
def attention_implementation(model: torch.nn.Module, name: str) -> Iterator[None]:
    """Within the block, `model` (and a PeftModel's base) runs attention with implementation `name`.

    transformers looks the implementation up in the config on every forward pass, so switching it between
    batches is cheap; the previous value is restored afterwards.
    """
    config = model.config
    before = config._attn_implementation
    if name == before:
        yield
        return
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = before
