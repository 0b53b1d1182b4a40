"""Behaviour statistics of model outputs: lengths, predicted-label distribution, prior shift."""

from __future__ import annotations

import math

import pytest

from spillover.analysis.behaviour import COLLAPSE_SHARE, OTHER, behaviour_stats, total_variation

OPTS = ["negative", "positive"]


def test_label_distribution_entropy_and_prior_shift_by_hand():
    rows = [
        {"prediction": "positive", "options": OPTS, "gold": 0},
        {"prediction": "positive", "options": OPTS, "gold": 1},
        {"prediction": 1, "options": OPTS, "gold": "negative"},
        {"prediction": "negative", "options": OPTS, "gold": 0},
    ]
    s = behaviour_stats(rows)
    assert s.label_counts == {"negative": 1, "positive": 3}
    assert s.label_proportions == {"negative": 0.25, "positive": 0.75}
    assert s.label_entropy_bits == pytest.approx(-(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75)))
    assert s.gold_proportions == {"negative": 0.75, "positive": 0.25}
    assert s.label_prior_shift == pytest.approx(0.5)  # ½(|.25−.75| + |.75−.25|)
    assert s.majority_share == 0.75 and s.collapsed is False
    # no generated text: a chosen label's length is not an output length (it would track the label chosen)
    assert s.token_length is None and s.char_length.n == 0 and s.char_length.mean is None


def test_unparsable_predictions_count_as_other():
    s = behaviour_stats([{"prediction": "maybe", "options": OPTS, "gold": 1}])
    assert s.label_counts == {"negative": 0, "positive": 0, OTHER: 1}
    assert s.label_prior_shift == pytest.approx(1.0)


def test_generation_rows_give_lengths_in_tokens_only(tokenizer):
    s = behaviour_stats([{"prediction": "abc"}, {"prediction": "abcdefg"}], tokenizer=tokenizer)
    assert s.label_counts is None and s.label_prior_shift is None
    assert s.token_length.mean == pytest.approx(5.0) and s.char_length.median == pytest.approx(5.0)
    assert set(s.to_dict()) >= {"char_length", "token_length", "label_prior_shift"}


def test_majority_collapse_is_flagged_at_a_share_of_nine_in_ten():
    def rows(n_positive: int, n: int = 10) -> list[dict]:
        return [{"prediction": int(i < n_positive), "options": OPTS, "gold": i % 2} for i in range(n)]

    assert COLLAPSE_SHARE == 0.9
    collapsed = behaviour_stats(rows(9))  # 9 of 10 answer "positive"
    assert collapsed.majority_share == pytest.approx(0.9) and collapsed.collapsed is True
    assert behaviour_stats(rows(10)).collapsed is True
    assert behaviour_stats(rows(1)).majority_share == pytest.approx(0.9)  # "negative" 9 of 10 collapses too
    healthy = behaviour_stats(rows(8))
    assert healthy.majority_share == pytest.approx(0.8) and healthy.collapsed is False
    gen = behaviour_stats([{"prediction": "abc"}])
    assert gen.majority_share is None and gen.collapsed is None
    assert {"majority_share", "collapsed"} <= set(collapsed.to_dict())


def test_total_variation_by_hand():
    assert total_variation({"a": 1.0}, {"b": 1.0}) == 1.0
    assert total_variation({"a": 0.6, "b": 0.4}, {"a": 0.5, "b": 0.5}) == pytest.approx(0.1)


def test_hedging_format_and_style_by_hand():
    from spillover.analysis.behaviour import DEFAULT_HEDGES

    rows = [
        {"prediction": "positive", "options": OPTS, "gold": 1, "free_text": "Positive."},
        {"prediction": "negative", "options": OPTS, "gold": 0, "free_text": "I don’t know."},
        {"prediction": "negative", "options": OPTS, "gold": 0, "free_text": "The paper proposes a method"},
        {"prediction": "positive", "options": OPTS, "gold": 1},  # no free text: the prediction is the output
    ]
    ok = lambda text: text.lower().rstrip(".") in OPTS  # noqa: E731
    s = behaviour_stats(rows, hedges=DEFAULT_HEDGES, format_ok=ok, styles=None)
    assert s.hedge_rate == pytest.approx(1 / 4)  # the curly apostrophe is normalised
    assert s.format_fail_rate == pytest.approx(2 / 4)
    assert s.char_length.mean == pytest.approx((9 + 13 + 27) / 3)  # free text only, never a chosen label
    assert s.label_counts == {"negative": 2, "positive": 2} and s.sounds_like is None


def test_sounds_like_picks_the_reference_with_the_closest_style():
    from spillover.analysis.behaviour import sounds_like
    from spillover.data.stats import style_profile

    refs = {
        "sentiment": style_profile(["positive", "negative"]).tolist(),
        "summary": style_profile(["We propose a new method for the task of the paper."]).tolist(),
    }
    sims, best = sounds_like(["In this paper we propose a method for the task."], refs)
    assert best == "summary" and sims["summary"] > sims["sentiment"]
    assert sounds_like(["negative", "positive"], refs)[1] == "sentiment"
    assert sounds_like(["   "], refs) == ({"sentiment": None, "summary": None}, None)


def test_expected_format_per_task_type():
    from spillover.data.tasks import builtin_tasks
    from spillover.evaluation.checkpoint_eval import expected_format

    tasks = builtin_tasks()
    sst2 = expected_format(tasks["sst2"])
    assert sst2("Positive.") and sst2("negative sentiment\nbecause") and not sst2("The review is positive")
    gsm = expected_format(tasks["gsm8k"])
    assert gsm("so 3 + 4 = 7") and not gsm("I don't know")
    squad = expected_format(tasks["squad_rc"])
    assert squad("Paris") and not squad("  \n ")


def test_the_transfer_behaviour_table_shows_majority_collapse_and_no_label_length():
    from spillover.studies.evidence import behaviour_row

    rows = [{"prediction": 0, "options": OPTS, "gold": i % 2} for i in range(10)]  # "negative" on every row
    row = behaviour_row("sst2", "toy", behaviour_stats(rows).to_dict())
    assert row["majority_share"] == 1.0 and row["collapsed"] is True
    assert row["mean_length"] is None and row["prior_shift"] == pytest.approx(0.5)
