"""Training sequences from task examples: prompt masking checked by hand, truncation, k-shot prompts."""

from __future__ import annotations

import logging

from spillover.data.collate import IGNORE, pad_batch
from spillover.data.prompts import render_context, sample_demos
from spillover.data.sft import build_multitask_sequences, build_sequences
from spillover.data.tasks import load_examples, load_task_file
from spillover.training.objectives import count_targets


def toy_task(path):
    task = load_task_file(path)["toy_sentiment"]
    return task, load_examples(task, "train")


def test_only_the_answer_carries_loss(sentiment_task_file, tokenizer):
    task, examples = toy_task(sentiment_task_file)
    seqs = build_sequences(task, tokenizer, examples[:2], max_len=256)
    batch = pad_batch(seqs, tokenizer.pad_token_id)
    first = seqs[0]
    prompt = tokenizer.decode(first.input_ids[: first.n_prompt])
    assert prompt == (
        "<|im_start|>user\nIs the review negative or positive?\n\nReview: a great film<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert tokenizer.decode(first.input_ids[first.n_prompt :]) == "positive<|im_end|>\n"
    labels = batch["labels"][0]
    assert (labels[: first.n_prompt] == IGNORE).all()
    assert labels[first.n_prompt : len(first.input_ids)].tolist() == first.input_ids[first.n_prompt :]
    assert (labels[len(first.input_ids) :] == IGNORE).all()  # padding
    assert count_targets(batch["labels"]) == sum(len(s.input_ids) - s.n_prompt for s in seqs)


def test_truncation_keeps_the_answer(sentiment_task_file, tokenizer, caplog):
    task, examples = toy_task(sentiment_task_file)
    with caplog.at_level(logging.WARNING):
        seqs = build_sequences(task, tokenizer, examples[:3], max_len=40)
    assert all(len(s.input_ids) == 40 for s in seqs) and "were cut" in caplog.text
    assert tokenizer.decode(seqs[0].input_ids[seqs[0].n_prompt :]) == "positive<|im_end|>\n"


def test_k_shot_prompts_are_seeded_and_exclude_the_example(sentiment_task_file, tokenizer):
    task, examples = toy_task(sentiment_task_file)
    a = build_sequences(task, tokenizer, examples[:4], max_len=1024, shots=2, seed=7)
    b = build_sequences(task, tokenizer, examples[:4], max_len=1024, shots=2, seed=7)
    zero = build_sequences(task, tokenizer, examples[:4], max_len=1024)
    assert a == b and all(len(x.input_ids) > len(z.input_ids) for x, z in zip(a, zero, strict=True))
    prompt = tokenizer.decode(a[0].input_ids[: a[0].n_prompt])
    assert prompt.count("<|im_start|>assistant\n") == 3  # two demonstrations + the question


def test_multitask_concatenates(sentiment_task_file, tokenizer):
    task, examples = toy_task(sentiment_task_file)
    both = build_multitask_sequences([(task, examples[:3]), (task, examples[3:5])], tokenizer, max_len=256)
    assert both == build_sequences(task, tokenizer, examples[:3], 256) + build_sequences(
        task, tokenizer, examples[3:5], 256
    )


def _prompt(tokenizer, seq) -> str:
    return tokenizer.decode(seq.input_ids[: seq.n_prompt])


def test_fticl_prompt_is_the_evaluation_prompt_with_demonstrations(sentiment_task_file, tokenizer):
    """FTICL training renders demonstrations exactly as k-shot evaluation does (same template)."""
    task, examples = toy_task(sentiment_task_file)
    (seq,) = build_sequences(task, tokenizer, examples[:1], max_len=4096, shots=2, seed=3, demo_pool=examples)
    demos = sample_demos(examples, 2, 3, exclude_id=examples[0].id)
    assert _prompt(tokenizer, seq) == render_context(task, tokenizer, examples[0], demos)
    assert all(d.target in _prompt(tokenizer, seq) for d in demos)


def test_fticl_fixed_demonstrations_are_shared_and_never_the_example_itself(sentiment_task_file, tokenizer):
    task, examples = toy_task(sentiment_task_file)
    pool = examples[:6]
    fixed = build_sequences(task, tokenizer, pool, max_len=4096, shots=2, seed=1, demos="fixed")
    drawn = sample_demos(pool, 3, 1)  # the fixed set: k + 1 draws, the spare replaces the example itself
    for ex, seq in zip(pool, fixed, strict=True):
        shown = [d for d in drawn if d.id != ex.id][:2]
        assert _prompt(tokenizer, seq) == render_context(task, tokenizer, ex, shown)
    assert any(ex.id in {d.id for d in drawn[:2]} for ex in pool)  # the swap rule was exercised
    per_example = build_sequences(task, tokenizer, pool, max_len=4096, shots=2, seed=1)
    demo_sets = {
        tuple(d.id for d in sample_demos(pool, 2, 1, exclude_id=ex.id)) for ex in pool
    }  # per-example draws differ between examples
    assert len(demo_sets) > 1 and per_example != fixed
