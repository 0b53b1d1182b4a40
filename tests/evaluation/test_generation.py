"""Batched greedy decoding equals one-at-a-time decoding; stop strings, stop tokens and length limits."""

from __future__ import annotations

import pytest
import torch

from spillover.data.tasks import TaskSpec
from spillover.evaluation import generation
from spillover.evaluation.generation import generate, task_stops


@pytest.fixture()
def lively_model(tiny_model):
    """The tiny Llama with weights scaled up: its greedy outputs vary instead of repeating one token."""
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.mul_(3.0)
    return tiny_model


@pytest.fixture()
def prompts(tokenizer):
    texts = ["hello there", "a", "the quick brown fox jumps over", "xyz 123", "Q: why?\nA:"]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def ids_of(gens):
    return [g.token_ids for g in gens]


def test_batched_equals_sequential(lively_model, tokenizer, prompts):
    batched = generate(lively_model, tokenizer, prompts, max_new_tokens=16, batch_size=5, stop_ids=set())
    alone = [
        generate(lively_model, tokenizer, [p], max_new_tokens=16, batch_size=1, stop_ids=set())[0]
        for p in prompts
    ]
    assert ids_of(batched) == ids_of(alone)
    assert all(len(g.token_ids) == 16 and g.stop_reason == "length" for g in batched)


def test_matches_transformers_generate(lively_model, tokenizer, prompts):
    [ours] = generate(lively_model, tokenizer, [prompts[2]], max_new_tokens=10, stop_ids=set())
    ref = lively_model.generate(
        torch.tensor([prompts[2]]), max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0
    )
    assert ours.token_ids == ref[0, len(prompts[2]) :].tolist()


NEVER = "@@never@@"


def _ascii_stop(text: str, at: int) -> str:
    """A printable ASCII character of `text` at or after index `at` (NEVER if there is none)."""
    return next((c for c in text[at:] if c.isascii() and c.isprintable() and c != " "), NEVER)


def test_stop_strings_per_row_batched_equals_sequential(lively_model, tokenizer, prompts):
    free = generate(lively_model, tokenizer, prompts, max_new_tokens=24, stop_ids=set())
    stops = [[_ascii_stop(g.text, 3 * i)] for i, g in enumerate(free)]  # rows stop at different steps
    batched = generate(
        lively_model, tokenizer, prompts, stops, max_new_tokens=24, batch_size=5, stop_ids=set()
    )
    alone = [
        generate(lively_model, tokenizer, [p], [s], max_new_tokens=24, stop_ids=set())[0]
        for p, s in zip(prompts, stops, strict=True)
    ]
    assert ids_of(batched) == ids_of(alone)
    stopped = [(g, f, s) for g, f, [s] in zip(batched, free, stops, strict=True) if s != NEVER]
    assert len(stopped) >= 2
    for g, f, stop in stopped:
        assert g.stop_reason == "stop"
        assert stop not in g.text  # the stop string is cut off ...
        assert g.text == f.text[: f.text.index(stop)]  # ... exactly at its first occurrence
    assert len({len(g.token_ids) for g in batched}) > 1  # rows really finished at different steps


def test_multi_token_stop_string(lively_model, tokenizer, prompts):
    [free] = generate(lively_model, tokenizer, [prompts[0]], max_new_tokens=16, stop_ids=set())
    ascii_pairs = [
        free.text[i : i + 2] for i in range(4, len(free.text) - 1) if free.text[i : i + 2].isascii()
    ]
    stop = ascii_pairs[0]
    [g] = generate(lively_model, tokenizer, [prompts[0]], [[stop]], max_new_tokens=16, stop_ids=set())
    assert g.text == free.text[: free.text.index(stop)] and g.stop_reason == "stop"


def test_stop_token_ends_a_row_and_is_not_returned(lively_model, tokenizer, prompts):
    [free] = generate(lively_model, tokenizer, [prompts[3]], max_new_tokens=12, stop_ids=set())
    stop_token = free.token_ids[4]
    cut = free.token_ids.index(stop_token)
    [g] = generate(lively_model, tokenizer, [prompts[3]], max_new_tokens=12, stop_ids={stop_token})
    assert g.token_ids == free.token_ids[:cut] and g.stop_reason == "eos"


def test_max_new_tokens_limits_every_row(lively_model, tokenizer, prompts):
    gens = generate(lively_model, tokenizer, prompts, max_new_tokens=3, batch_size=2, stop_ids=set())
    assert all(len(g.token_ids) == 3 for g in gens)


def test_task_stops_chat_and_raw(tiny_model, tokenizer):
    chat = TaskSpec(name="g", type="generation", test="t.jsonl", metric="exact_match", stop=["\n\n"])
    stops, ids = task_stops(chat, tiny_model, tokenizer)
    assert stops == ["\n\n", "<|im_end|>"]
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in ids
    raw = TaskSpec(name="r", type="generation", test="t.jsonl", metric="exact_match", chat_template=False)
    stops, ids = task_stops(raw, tiny_model, tokenizer)
    assert tokenizer.eos_token_id in ids


def test_autocast_cache_stores_bf16_and_gives_identical_logits(lively_model, tokenizer, prompts, monkeypatch):
    from transformers import DynamicCache

    from spillover.evaluation.generation import new_cache

    ids = torch.tensor([prompts[2]])
    runs = []
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.inference_mode():
        for cache in (DynamicCache(config=lively_model.config), new_cache(lively_model, torch.device("cpu"))):
            first = lively_model(input_ids=ids, past_key_values=cache, use_cache=True).logits[:, -1]
            nxt = first.argmax(-1, keepdim=True)
            second = lively_model(input_ids=nxt, past_key_values=cache, use_cache=True).logits[:, -1]
            runs.append((first, second, cache.layers[0].keys.dtype))
    assert runs[0][2] == torch.float32 and runs[1][2] == torch.bfloat16
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    outs = []
    for plain in (False, True):
        if plain:
            monkeypatch.setattr(
                generation, "new_cache", lambda model, device: DynamicCache(config=model.config)
            )
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs.append(ids_of(generate(lively_model, tokenizer, prompts, max_new_tokens=8, stop_ids=set())))
    assert outs[0] == outs[1]
