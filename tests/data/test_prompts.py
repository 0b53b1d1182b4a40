"""Prompt rendering (chat and raw), demonstrations and token pairing."""

from __future__ import annotations

from spillover.data.collate import IGNORE, encode_pair, length_buckets, pad_batch, truncate
from spillover.data.prompts import end_of_answer, render_context, render_training, sample_demos
from spillover.data.tasks import Example, TaskSpec


def _task(**kw):
    base = dict(name="t", type="classification", test="x.jsonl", labels=["neg", "pos"], metric="accuracy")
    return TaskSpec(**{**base, **kw})


def _ex(i, text="good", target="pos"):
    return Example(id=str(i), text=text, target=target, row={})


def test_chat_training_pair_ends_with_end_of_turn(tokenizer):
    task = _task(instruction="Sentiment?")
    context, continuation = render_training(task, tokenizer, _ex(0))
    assert context == "<|im_start|>user\nSentiment?\n\ngood<|im_end|>\n<|im_start|>assistant\n"
    assert continuation == "pos<|im_end|>\n"
    assert end_of_answer(task, tokenizer) == "<|im_end|>\n"


def test_chat_demos_are_turns(tokenizer):
    context = render_context(_task(), tokenizer, _ex(0), demos=[_ex(1, "bad", "neg")])
    assert context.startswith("<|im_start|>user\nbad<|im_end|>\n<|im_start|>assistant\nneg<|im_end|>\n")


def test_raw_layout_matches_lm_eval(tokenizer):
    task = _task(chat_template=False, input="Review: {text}\nSentiment:", instruction=None)
    demo = Example("1", "Review: bad\nSentiment:", "neg", {})
    ex = Example("0", "Review: good\nSentiment:", "pos", {})
    assert (
        render_context(task, tokenizer, ex, [demo])
        == "Review: bad\nSentiment: neg\n\nReview: good\nSentiment:"
    )
    assert render_training(task, tokenizer, ex)[1] == " pos<|im_end|>"


def test_encode_pair_moves_trailing_space_like_lm_eval(tokenizer):
    ctx, cont = encode_pair(tokenizer, "Answer: ", "yes", chat=False)
    assert tokenizer.decode(ctx) == "Answer:" and tokenizer.decode(cont) == " yes"


def test_sample_demos_seeded_and_excludes_self():
    pool = [_ex(i) for i in range(20)]
    a = sample_demos(pool, 3, seed=7, exclude_id="5")
    assert a == sample_demos(pool, 3, seed=7, exclude_id="5")
    assert "5" not in {d.id for d in a} and len(a) == 3
    assert sample_demos(pool, 0, seed=7) == []


def test_truncate_keeps_target_and_cuts_prompt_from_left():
    seq = truncate([1, 2, 3, 4], [5, 6], max_len=4)
    assert seq.input_ids == [3, 4, 5, 6] and seq.n_prompt == 2


def test_pad_batch_masks_prompt_and_padding():
    batch = pad_batch([truncate([1, 2], [3], 8), truncate([4], [5, 6], 8)], pad_id=0)
    assert batch["labels"].tolist() == [[IGNORE, IGNORE, 3], [IGNORE, 5, 6]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 1]]
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 5, 6]]


def test_length_buckets_cover_every_index_once_and_group_lengths():
    lengths = [i % 37 for i in range(200)]
    batches = length_buckets(lengths, batch_size=8, seed=0, window=50)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(200))
    spread = max(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
    assert spread <= 2
    assert batches == length_buckets(lengths, batch_size=8, seed=0, window=50)
