"""Packed log-likelihood scoring equals separate per-option forwards and hand-computed log-probabilities."""

from __future__ import annotations

import pytest
import torch

from spillover.data.tasks import load_task_file
from spillover.evaluation.scoring import (
    MAX_ROWS_FACTOR,
    ScoredExample,
    _shared_prefix,
    _token_batches,
    encode_options,
    pack_row,
    score_examples,
    score_requests,
)
from spillover.models import prefix_cache


def enc(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def naive_logprob(model, context: list[int], option: list[int]) -> float:
    """Separate forward of context + option; sum of log p(option tokens)."""
    with torch.no_grad():
        logits = model(torch.tensor([context + option])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(logprobs[len(context) - 1 + k, t].item() for k, t in enumerate(option))


@pytest.fixture()
def requests(tokenizer):
    ctx = [
        "Review: a great film. Sentiment:",
        "Q: 2+2?\nA:",
        "A much longer context, so that the batch really needs padding on its right side. Label:",
        "x",
    ]
    opts = [
        [" positive", " negative"],
        [" 4", " four", " 5"],
        [" yes", " no", " maybe so", " perhaps"],
        [" y", " zz"],
    ]
    return [(enc(tokenizer, c), [enc(tokenizer, o) for o in os_]) for c, os_ in zip(ctx, opts, strict=True)]


def test_pack_row_layout():
    row = pack_row([10, 11, 12], [[20, 21], [30]])
    assert row.input_ids == [10, 11, 12, 20]  # an option's last token is not fed; [30] adds nothing
    assert row.branches == [0, 0, 0, 1]
    assert row.positions == [0, 1, 2, 3]  # each option restarts at len(prompt)
    assert row.sources == [[2, 3], [2]]  # option tokens are predicted from these positions
    assert row.targets == [[20, 21], [30]]


def test_token_batches_take_more_short_rows_within_the_budget():
    lengths = [200, 100, 60, 30, 30, 30, 10]  # longest first, as score_requests orders them
    order = list(range(len(lengths)))
    # batch_size 2: at least 2 rows, more while rows × longest ≤ 2 × TOKENS_PER_ROW (256)
    assert _token_batches(order, lengths, 2) == [[0, 1], [2, 3, 4, 5], [6]]
    assert _token_batches(list(range(40)), [1] * 40, 2) == [
        list(range(2 * MAX_ROWS_FACTOR)),
        list(range(16, 32)),
        list(range(32, 40)),
    ]


def test_pack_row_after_a_cached_prefix():
    row = pack_row([7, 8, 10, 11], [[20, 21], [30]], n_cached=2)
    assert row.input_ids == [10, 11, 20]  # the first 2 context tokens come from the prefix cache
    assert row.branches == [0, 0, 1]
    assert row.positions == [2, 3, 4]  # positions continue after the prefix
    assert row.sources == [[1, 2], [1]]


def test_shared_prefix():
    assert _shared_prefix([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 3]]) == [1, 2]  # each keeps a token
    assert _shared_prefix([[1, 2, 3]]) == []  # nothing to share with
    assert _shared_prefix([[1, 2, 3, 4], [7, 2, 3, 5]]) == []  # nothing in common


@pytest.mark.parametrize("batch_size", [1, 3])
def test_packed_scores_equal_naive_per_option_forwards(tiny_model, requests, batch_size):
    packed = score_requests(tiny_model, requests, batch_size=batch_size)
    for (ctx, options), scores in zip(requests, packed, strict=True):
        assert [s.n_tokens for s in scores] == [len(o) for o in options]
        for option, s in zip(options, scores, strict=True):
            assert s.logprob == pytest.approx(naive_logprob(tiny_model, ctx, option), abs=1e-4)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_shared_prefix_scores_equal_naive_per_option_forwards(
    tiny_model, requests, tokenizer, impl, monkeypatch
):
    head = enc(tokenizer, "<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\n" * 3)
    prefixed = [(head + ctx, options) for ctx, options in requests] * 3
    computed = []
    real = prefix_cache.prefix_states
    monkeypatch.setattr(prefix_cache, "prefix_states", lambda m, p: computed.append(p) or real(m, p))
    tiny_model.set_attn_implementation(impl)  # as `load_model(..., attn_implementation=impl)` chooses it
    for (ctx, options), scores in zip(
        prefixed, score_requests(tiny_model, prefixed, batch_size=2), strict=True
    ):
        for option, s in zip(options, scores, strict=True):
            assert s.logprob == pytest.approx(naive_logprob(tiny_model, ctx, option), abs=1e-4)
    assert computed == [head]  # the shared prefix ran once, as one cached prefix


def test_eager_attention_gets_the_same_scores(tiny_model, requests):
    sdpa = score_requests(tiny_model, requests, batch_size=4)
    tiny_model.set_attn_implementation("eager")
    eager = score_requests(tiny_model, requests, batch_size=4)
    for a, b in zip(sdpa, eager, strict=True):
        assert [s.logprob for s in a] == pytest.approx([s.logprob for s in b], abs=1e-4)


def test_two_token_option_against_hand_computed_log_softmax(tiny_model, tokenizer):
    ctx, option = enc(tokenizer, "The sky is"), enc(tokenizer, " b")  # byte-level: " ", "b"
    assert len(option) == 2
    with torch.no_grad():
        logits = tiny_model(torch.tensor([ctx + option])).logits[0].double()
    p = len(ctx)
    # log p(t | prefix) = logit_t - log Σ_v exp(logit_v), at the position before each option token
    lp0 = logits[p - 1, option[0]] - torch.log(torch.exp(logits[p - 1]).sum())
    lp1 = logits[p, option[1]] - torch.log(torch.exp(logits[p]).sum())
    greedy = bool(logits[p - 1].argmax() == option[0] and logits[p].argmax() == option[1])
    [[score]] = score_requests(tiny_model, [(ctx, [option])])
    assert score.logprob == pytest.approx((lp0 + lp1).item(), abs=1e-4)
    assert score.n_tokens == 2 and score.is_greedy == greedy


def test_is_greedy_true_for_the_argmax_continuation(tiny_model, tokenizer):
    ctx = enc(tokenizer, "hello")
    with torch.no_grad():
        first = tiny_model(torch.tensor([ctx])).logits[0, -1].argmax().item()
        second = tiny_model(torch.tensor([ctx + [first]])).logits[0, -1].argmax().item()
    [[greedy, other]] = score_requests(tiny_model, [(ctx, [[first, second], [(first + 1) % 256, second]])])
    assert greedy.is_greedy and not other.is_greedy


def test_predicted_and_predicted_norm_by_hand():
    s = ScoredExample(logprobs=(-2.0, -3.0), n_tokens=(1, 3), n_bytes=(1, 6), is_greedy=(False, False))
    assert s.predicted == 0  # -2 > -3
    assert s.predicted_norm == 1  # -3/6 = -0.5 > -2/1


def test_encode_options_shares_the_context(tokenizer, sentiment_task_file):
    task = load_task_file(sentiment_task_file)["toy_sentiment"]
    from spillover.data.tasks import load_examples

    ex = load_examples(task, "test", limit=1)[0]
    ctx, options = encode_options(task, tokenizer, ex)
    assert tokenizer.decode(ctx).endswith("<|im_start|>assistant\n")
    assert [tokenizer.decode(o) for o in options] == ["negative", "positive"]


def test_score_examples_on_a_task(tiny_model, tokenizer, sentiment_task_file):
    from spillover.data.tasks import load_examples

    task = load_task_file(sentiment_task_file)["toy_sentiment"]
    examples = load_examples(task, "test")
    scored = score_examples(tiny_model, tokenizer, task, examples, batch_size=3)
    for ex, s in zip(examples, scored, strict=True):
        ctx, options = encode_options(task, tokenizer, ex)
        naive = [naive_logprob(tiny_model, ctx, o) for o in options]
        assert list(s.logprobs) == pytest.approx(naive, abs=1e-4)
        assert s.n_bytes == (8, 8)
