"""A shared prefix's keys and values, computed once and read by the attention of every later forward pass.

Scoring with an instruct model's chat template feeds hundreds of prompts that start with the same system
prompt and task instruction (41–52 tokens on the embedded model). `prefix_states` runs those tokens once
and keeps every layer's keys and values (after the rotary embedding, as the model's own KV cache holds
them); `layer_kwargs` hands them to the decoder layers, which prepend them to the keys and values of the
rows they compute, whose positions continue after the prefix. Every token then sees the prefix exactly as
in the full prompt (same logits up to rounding, tested), while the rows hold only the tokens after it.

transformers' own KV cache does the same for generation, but its layers look the cache up by their
`layer_idx`, which `torch.compile` of the decoder layers specialises on: one graph per layer instead of one
for all. Here the layer gets its prefix as a tensor argument (a keyword the decoder layer passes down to
the attention function), so one compiled graph serves every layer. The attention is transformers' `sdpa`
function, or the `eager` one Llama-family models (SmolLM, Mistral, Qwen2) share, behind a registered
wrapper that does the concatenation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

KWARG = "spillover_prefix"  # the keyword carrying (keys, values) from the layer call to the attention
WRAPPED = {"sdpa": "spillover_prefix_sdpa", "eager": "spillover_prefix_eager"}  # model's -> registered name


def implementation(model: nn.Module) -> str | None:
    """The registered prefix-reading attention for `model`'s current implementation; None: not supported."""
    name = WRAPPED.get(getattr(model.config, "_attn_implementation", None))
    if name is not None:
        _register()
    return name


@functools.cache
def _register() -> None:
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.models.llama.modeling_llama import eager_attention_forward

    for base, fn in (("sdpa", sdpa_attention_forward), ("eager", eager_attention_forward)):
        AttentionInterface.register(WRAPPED[base], functools.partial(_with_prefix, fn))


def _with_prefix(
    attend: Callable, module: nn.Module, query: Tensor, key: Tensor, value: Tensor, mask, **kwargs
):
    """`attend` over the prefix's keys and values followed by the rows' own. mask: (B, 1, T, P + T)."""
    prefix_key, prefix_value = kwargs.pop(KWARG)
    rows = key.shape[0]
    key = torch.cat([prefix_key.to(key.dtype).expand(rows, -1, -1, -1), key], dim=2)
    value = torch.cat([prefix_value.to(value.dtype).expand(rows, -1, -1, -1), value], dim=2)
    return attend(module, query, key, value, mask, **kwargs)


@torch.inference_mode()
def prefix_states(model: nn.Module, prefix: Sequence[int]) -> list[tuple[Tensor, Tensor]]:
    """Per decoder layer, the keys and values (1, kv heads, P, head dim) of the tokens `prefix` at positions
    0..P-1 (one eager forward pass; run it under the autocast of the passes that will read it)."""
    device = next(model.parameters()).device
    out = model(input_ids=torch.tensor([list(prefix)], device=device), use_cache=True)
    return [(layer.keys, layer.values) for layer in out.past_key_values.layers]


def layer_kwargs(states: Sequence[tuple[Tensor, Tensor]]) -> list[dict[str, tuple[Tensor, Tensor]]]:
    """Per decoder layer, the keyword that hands it its prefix (`models.compile.running_layers`). The
    model's attention implementation must be the wrapper (`implementation`) while they are passed."""
    return [{KWARG: kv} for kv in states]
