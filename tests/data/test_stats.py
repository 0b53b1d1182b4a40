"""Dataset statistics and pairwise similarities against hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from spillover.data.stats import (
    FUNCTION_WORDS,
    N_HASH_BUCKETS,
    DatasetStats,
    cosine,
    dataset_stats,
    dict_cosine,
    entropy_bits,
    label_shape,
    label_shape_distance,
    label_stats,
    length_match,
    length_summary,
    pair_similarities,
    style_profile,
    style_similarity,
    syntax_summary,
)
from spillover.data.tasks import Example

LABELS = ["negative", "positive"]


def _ex(i: int, text: str, target: str, options=None) -> Example:
    gold = options.index(target) if options else None
    return Example(str(i), text, target, {}, tuple(options) if options else None, gold)


def test_length_summary_by_hand():
    s = length_summary([1, 2, 3, 4, 10])
    assert (s.mean, s.median) == (4.0, 3.0)
    assert s.p90 == pytest.approx(7.6)  # linear: 4 + 0.6·(10 − 4)
    assert s.histogram[:4] == [3, 1, 1, 0]  # [0,4): 1,2,3; [4,8): 4; [8,16): 10
    assert len(s.histogram) == len(s.bin_edges) and length_summary([5000]).histogram[-1] == 1
    assert length_summary([]).mean is None


def test_entropy_and_imbalance_by_hand():
    assert entropy_bits([2, 2]) == pytest.approx(1.0)
    assert entropy_bits([3, 1]) == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))
    s = label_stats(["a", "a", "a", "b"], ["a", "b"])
    assert s.counts == {"a": 3, "b": 1} and s.imbalance_ratio == 3.0 and s.note is None
    empty = label_stats(["a", "a"], ["a", "b", "c"])
    assert empty.imbalance_ratio is None and "b, c" in empty.note
    assert empty.entropy_bits == 0.0


def test_label_shape_distance_compares_shapes_not_label_names():
    # evenness H / log2 K, majority share, minority / majority
    sst = label_stats(["neg", "neg", "neg", "pos"], ["neg", "pos"])
    spam = label_stats(["spam", "ham", "ham", "ham"], ["spam", "ham"])  # other names, the same 3:1 shape
    h = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert label_shape(sst) == pytest.approx((h, 0.75, 1 / 3)) == label_shape(spam)
    assert label_shape_distance(sst, spam) == 0.0
    even = label_stats(["a", "b", "c"], ["a", "b", "c"])  # (1, 1/3, 1)
    assert label_shape(even) == pytest.approx((1.0, 1 / 3, 1.0))
    expected = (abs(h - 1.0) + abs(0.75 - 1 / 3) + abs(1 / 3 - 1.0)) / 3
    assert label_shape_distance(sst, even) == pytest.approx(expected)
    one_sided = label_stats(["a", "a"], ["a", "b"])  # (0, 1, 0): a label without rows
    assert label_shape(one_sided) == (0.0, 1.0, 0.0)
    assert label_shape_distance(even, one_sided) == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert label_shape(label_stats([], ["a", "b"])) is None


def test_cosines_by_hand():
    assert cosine([1, 0], [1, 1]) == pytest.approx(1 / math.sqrt(2))
    assert cosine([0, 0], [1, 1]) is None
    assert dict_cosine({"nsubj": 1.0}, {"nsubj": 1.0, "dobj": 1.0}) == pytest.approx(1 / math.sqrt(2))
    assert length_match(10, 20) == 0.5 and length_match(0, 0) == 1.0 and length_match(None, 3) is None


def test_style_profile_function_words_and_stable_hash():
    v = style_profile(["The cat and the dog"])
    k = len(FUNCTION_WORDS)
    assert v.shape == (k + N_HASH_BUCKETS,)
    assert v[FUNCTION_WORDS.index("the")] == pytest.approx(2 / 5)
    assert v[FUNCTION_WORDS.index("and")] == pytest.approx(1 / 5)
    assert v[k:].sum() == pytest.approx(1.0)
    np.testing.assert_array_equal(v, style_profile(["The cat and the dog"]))
    # Style similarity = mean of the two block cosines (each block normalised separately).
    a, b = np.zeros(k + N_HASH_BUCKETS), np.zeros(k + N_HASH_BUCKETS)
    a[0], a[k] = 1.0, 1.0
    b[0], b[k + 1] = 5.0, 1.0  # fw block identical (cos 1), 3-gram block orthogonal (cos 0)
    assert style_similarity(a, b) == pytest.approx(0.5)


def test_dataset_stats_with_byte_tokenizer_is_json_and_comparable(tokenizer):
    exs = [
        _ex(0, "ab", "positive", LABELS),
        _ex(1, "abcd", "positive", LABELS),
        _ex(2, "abcdef", "negative", LABELS),
    ]
    fake_embed = lambda texts: np.tile([1.0, 0.0], (len(texts), 1))  # noqa: E731
    s = dataset_stats(exs, tokenizer, LABELS, embedder=fake_embed, max_sample=2)
    assert s.input_length.mean == pytest.approx(4.0)  # byte-level: 2, 4, 6 tokens
    # outputs are chosen labels, not generated text: no output length (module docstring)
    assert s.output_length.n == 0 and s.output_length.mean is None
    assert s.labels.counts == {"negative": 1, "positive": 2} and s.labels.imbalance_ratio == 2.0
    assert s.semantic == [1.0, 0.0]
    assert s.syntax is None and any("syntactic profile" in n for n in s.notes)
    back = DatasetStats.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s
    gen = dataset_stats([_ex(0, "What is 2+2?", "4")], tokenizer, None)
    sims = pair_similarities(s, gen)
    assert sims["label_shape_distance"] is None and sims["semantic_cosine"] is None
    assert sims["syntax_cosine"] is None
    assert sims["length_match"] is None  # only one side has generated outputs
    assert gen.output_length.mean == 1.0  # "4": one byte-level token
    assert pair_similarities(s, s)["style_cosine"] == pytest.approx(1.0)
    assert pair_similarities(s, s)["label_shape_distance"] == pytest.approx(0.0)


class _Tok:
    def __init__(self, dep: str) -> None:
        self.dep_ = dep


def test_syntax_profile_from_a_parser():
    parser = lambda text: [_Tok("nsubj"), _Tok("ROOT"), _Tok("ROOT")]  # noqa: E731
    s = dataset_stats([_ex(0, "x", "y")], _byte_len_tokenizer(), None, parser=parser)
    assert s.syntax == {"ROOT": pytest.approx(2 / 3), "nsubj": pytest.approx(1 / 3)}


def _byte_len_tokenizer():
    return lambda texts, add_special_tokens=False: {"input_ids": [list(t.encode()) for t in texts]}


def test_tasks_with_different_label_names_but_one_shape_are_at_label_distance_zero(tokenizer):
    sent = ["neg", "neg", "neg", "pos"]
    spam = ["ham", "spam", "ham", "ham"]
    a = dataset_stats([_ex(i, "x", t, ["neg", "pos"]) for i, t in enumerate(sent)], tokenizer, ["neg", "pos"])
    b = dataset_stats(
        [_ex(i, "y", t, ["spam", "ham"]) for i, t in enumerate(spam)], tokenizer, ["spam", "ham"]
    )
    assert pair_similarities(a, b)["label_shape_distance"] == 0.0  # Jensen–Shannon over names said 1.0


def test_syntax_summary_by_hand():
    profile = {"ROOT": 0.2, "advcl": 0.1, "det": 0.2, "nsubj": 0.2, "punct": 0.3}
    s = syntax_summary(profile)
    assert s["syntax_relations"] == 5
    expected_bits = -(3 * 0.2 * math.log2(0.2) + 0.1 * math.log2(0.1) + 0.3 * math.log2(0.3))
    assert s["syntax_entropy_bits"] == pytest.approx(expected_bits)
    assert s["syntax_tokens_per_sentence"] == pytest.approx(5.0)  # one ROOT per 5 tokens
    assert s["syntax_clauses_per_sentence"] == pytest.approx(1.5)  # + one advcl per 2 sentences
    # top 5 by share, ties in name order (upper case sorts first)
    assert s["syntax_top_relations"] == "punct 0.300, ROOT 0.200, det 0.200, nsubj 0.200, advcl 0.100"
    assert syntax_summary({"dep": 1.0})["syntax_tokens_per_sentence"] is None  # no ROOT: undefined
    assert set(syntax_summary(None).values()) == {None} and syntax_summary(None).keys() == s.keys()
