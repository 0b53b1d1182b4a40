"""Tokenise (context, continuation) pairs, mask prompt tokens, and bucket by length.

Label convention: `labels[t] = input_ids[t]` on continuation tokens, -100 elsewhere (prompt and padding),
so the loss is on target tokens only. Causal shift happens in the loss, not here.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from spillover.errors import SpilloverError

IGNORE = -100


def encode_pair(tokenizer, context: str, continuation: str, chat: bool) -> tuple[list[int], list[int]]:
    """Token ids of context and continuation.

    Raw prompts follow lm-evaluation-harness exactly (trailing context whitespace moves into the
    continuation; the continuation is the tail of the whole string's encoding) so scores are comparable.
    Chat prompts end on the template's generation prompt, a clean token boundary: encode separately.
    """
    encode = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    if chat:
        return encode(context), encode(continuation)
    n_space = len(context) - len(context.rstrip())
    if n_space:
        context, continuation = context[:-n_space], context[-n_space:] + continuation
    whole, ctx = encode(context + continuation), encode(context)
    return ctx, whole[len(ctx) :]


@dataclass(frozen=True)
class Sequence_:
    """One tokenised training sequence."""

    input_ids: list[int]
    n_prompt: int


def truncate(ctx: list[int], cont: list[int], max_len: int) -> Sequence_:
    """Keep the whole continuation when possible; cut the prompt from the left (its start matters least)."""
    cont = cont[:max_len]
    ctx = ctx[max(0, len(ctx) - (max_len - len(cont))) :] if max_len > len(cont) else []
    return Sequence_(ctx + cont, len(ctx))


def pad_id(tokenizer) -> int:
    """The id training and loss computations pad with: the tokenizer's pad token, else its eos token."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise SpilloverError("the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token")
    return pad


def pad_batch(seqs: Sequence[Sequence_], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence. Returns input_ids, attention_mask, labels: (B, T)."""
    width = max(len(s.input_ids) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    for i, s in enumerate(seqs):
        n = len(s.input_ids)
        ids[i, :n] = torch.tensor(s.input_ids)
        mask[i, :n] = 1
        labels[i, s.n_prompt : n] = ids[i, s.n_prompt : n]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def length_buckets(lengths: Sequence[int], batch_size: int, seed: int, window: int = 50) -> list[list[int]]:
    """Index batches of similar length, in seeded random order.

    Shuffle, then sort within windows of `window` batches, cut into batches, shuffle the batches: most of
    the padding goes away while the order stays random enough for SGD.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * window
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        block = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches += [block[j : j + batch_size] for j in range(0, len(block), batch_size)]
    rng.shuffle(batches)
    return batches
