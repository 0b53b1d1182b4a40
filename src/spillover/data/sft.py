"""Supervised fine-tuning data: examples → tokenised, prompt-masked, truncated training sequences.

Each example is rendered exactly as evaluation renders it (`prompts.render_training`: same template, chat
template when the task uses one, optional k-shot demonstrations for FTICL), tokenised with
`collate.encode_pair`, and cut to `max_len` from the left of the prompt (`collate.truncate`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from spillover.data.collate import Sequence_, encode_pair, truncate
from spillover.data.prompts import render_training, sample_demos, uses_chat
from spillover.data.tasks import Example, TaskSpec

log = logging.getLogger(__name__)


def build_sequences(
    task: TaskSpec,
    tokenizer,
    examples: Sequence[Example],
    max_len: int,
    shots: int = 0,
    seed: int = 0,
    demo_pool: Sequence[Example] | None = None,
) -> list[Sequence_]:
    """One training sequence per example. With `shots` > 0 every prompt is prefixed with that many
    demonstrations drawn (seeded, per example, never the example itself) from `demo_pool` (default:
    `examples`, i.e. the training set itself, as FTICL does)."""
    chat = uses_chat(task, tokenizer)
    pool = examples if demo_pool is None else demo_pool
    out, n_cut = [], 0
    for example in examples:
        demos = sample_demos(pool, shots, seed, exclude_id=example.id)
        context, continuation = render_training(task, tokenizer, example, demos)
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
) -> list[Sequence_]:
    """Concatenate the sequences of several tasks (each with its own examples as its demo pool).
    The loop's length bucketing shuffles them together; weighted mixtures live in `data/mixture.py`."""
    out: list[Sequence_] = []
    for task, examples in parts:
        out += build_sequences(task, tokenizer, examples, max_len, shots=shots, seed=seed)
    return out
