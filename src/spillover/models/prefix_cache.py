"""A shared prefix's keys and values, computed once and read by every later forward pass as its KV cache.

Scoring with an instruct model's chat template feeds hundreds of prompts that start with the same system
prompt and task instruction (41–52 tokens on the embedded model). `prefix_states` runs those tokens once
and keeps every layer's keys and values (the model's own KV cache after the prefix); `prefix_cache` hands
them to a batch as its `past_key_values` (a public `DynamicCache` holding one copy of the prefix per row),
so the attention of the rows, whose positions continue after the prefix, reads the prefix first.
Every token then sees the prefix exactly as in the full prompt (same logits up to rounding, tested), while
the rows hold only the tokens after it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


@torch.inference_mode()
def prefix_states(model: nn.Module, prefix: Sequence[int]) -> list[tuple[Tensor, Tensor]]:
    """Per decoder layer, the keys and values (1, kv heads, P, head dim) of the tokens `prefix` at positions
    0..P-1 (one forward pass; run it under the autocast of the passes that will read it)."""
    device = next(model.parameters()).device
    out = model(input_ids=torch.tensor([list(prefix)], device=device), use_cache=True)
    return [(layer.keys, layer.values) for layer in out.past_key_values.layers]


def prefix_cache(model: nn.Module, states: Sequence[tuple[Tensor, Tensor]], rows: int):
    """A `DynamicCache` holding the prefix `states` once for each of `rows` rows, to pass as
    `past_key_values` (the forward pass appends the rows' own keys and values to it: one per batch)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    for i, (keys, values) in enumerate(states):
        cache.update(keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1), i)
    return cache
