"""Supervised fine-tuning data: examples → tokenised, prompt-masked, truncated training sequences.

Each example is rendered exactly as evaluation renders it (`prompts.render_training`: same template, chat
template when the task uses one, optional k-shot demonstrations for FTICL), tokenised with
`collate.encode_pair`, and cut to `max_len` from the left of the prompt (`collate.truncate`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

from spillover.data.collate import Sequence_, encode_pair, truncate
from spillover.data.prompts import render_training, sample_demos, uses_chat
from spillover.data.tasks import Example, TaskSpec

log = logging.getLogger(__name__)
DemoDraw = Literal["per_example", "fixed"]


def build_sequences(
    task: TaskSpec,
    tokenizer,
    examples: Sequence[Example],
    max_len: int,
    shots: int = 0,
    seed: int = 0,
    demo_pool: Sequence[Example] | None = None,
    demos: DemoDraw = "per_example",
) -> list[Sequence_]:
    """One training sequence per example. With `shots` > 0 every prompt is prefixed with that many
    demonstrations (FTICL) from `demo_pool` (default: `examples`, i.e. the training set itself), seeded:
    `demos="per_example"` draws a fresh set for each example (never the example itself); `"fixed"` draws
    one set and prefixes every prompt with it (an example that is itself a demonstration gets the set with
    itself swapped for the next draw, so no prompt shows its own answer)."""
    chat = uses_chat(task, tokenizer)
    pool = examples if demo_pool is None else demo_pool
    fixed = sample_demos(pool, shots + 1, seed, exclude_id=None) if demos == "fixed" and shots else None
    out, n_cut = [], 0
    for example in examples:
        if fixed is None:
            shown = sample_demos(pool, shots, seed, exclude_id=example.id)
        else:
            shown = [d for d in fixed if d.id != example.id][:shots]
        context, continuation = render_training(task, tokenizer, example, shown)
        ctx, cont = encode_pair(tokenizer, context, continuation, chat=chat)
        n_cut += len(ctx) + len(cont) > max_len
        out.append(truncate(ctx, cont, max_len))
    if n_cut:
        log.warning(
            "task %s: %d of %d sequences longer than max_len=%d were cut (prompt cut from the left)",
            task.name,
            n_cut,
            len(out),
            max_len,
        )
    return out


def build_multitask_sequences(
    parts: Sequence[tuple[TaskSpec, Sequence[Example]]],
    tokenizer,
    max_len: int,
    shots: int = 0,
    seed: int = 0,
    demos: DemoDraw = "per_example",
) -> list[Sequence_]:
    """Concatenate the sequences of several tasks (each with its own examples as its demo pool).
    The loop's length bucketing shuffles them together; weighted mixtures live in `data/mixture.py`."""
    out: list[Sequence_] = []
    for task, examples in parts:
        out += build_sequences(task, tokenizer, examples, max_len, shots=shots, seed=seed, demos=demos)
    return out
