"""Metrics against hand-computed values: extraction, normalisation, each registered metric, bootstrap CI."""

from __future__ import annotations

import numpy as np
import pytest

from spillover.data.tasks import Example, TaskSpec
from spillover.errors import SpilloverError
from spillover.evaluation.metrics import (
    METRICS,
    REPORTED_BESIDE,
    balanced_accuracy_of,
    bootstrap_ci,
    canonical_number,
    code_block,
    first_line,
    get_metric,
    last_number,
    macro_f1_of,
    metrics_for,
    normalize_answer,
    register_metric,
    reported_metrics,
    rouge_l_f,
)


def gen_task(**kw) -> TaskSpec:
    return TaskSpec(name="t", type="generation", test="test.jsonl", **{"metric": "exact_match", **kw})


def example(target: str = "", **row) -> Example:
    return Example(id="0", text="q", target=target, row={"output": target, **row})


def score(metric: str, prediction: str, ex: Example, task: TaskSpec) -> float:
    return METRICS.get(metric).score(prediction, ex, task)


# ------------------------------------------------------------------------------------------ extraction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She pays 3 + 4 = 7 dollars. The answer is 1,234.", "1234"),
        ("It costs $5.50 in total", "5.5"),
        ("so 18.00", "18"),
        ("The temperature fell to -3 degrees.", "-3"),
        ("Natalia sold 48/2 = 24 clips.\n#### 72\nThen 99 more", "72"),  # the marker wins over later numbers
        ("#### $1,000", "1000"),
        ("no digits here", ""),
        ("7.", "7"),
    ],
)
def test_last_number(text, expected):
    assert last_number(text) == expected


def test_canonical_number_spellings():
    assert canonical_number("$1,234.50") == "1234.5"
    assert canonical_number("-0.0") == "0"
    assert canonical_number("100") == "100"  # trailing zeros of an integer stay


def test_first_line():
    assert first_line("\n\n   Paris  \nFrance is a country") == "Paris"
    assert first_line("") == ""
    assert first_line(" \n \n") == ""


def test_code_block():
    assert code_block("Here:\n```python\ndef f():\n    return 1\n```\nDone.") == "def f():\n    return 1\n"
    assert code_block("```\nx = 1\n```") == "x = 1\n"
    assert code_block("def g(): pass") == "def g(): pass"  # no fence: the whole text
    assert (
        code_block("```python\ndef h():\n    return 2") == "def h():\n    return 2"
    )  # cut off by max tokens
    assert code_block("a\n```py\nA\n```\n```python\nB\n```") == "A\n"  # the first block


def test_normalize_answer_squad():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("  Theory  ") == "theory"  # 'the' only as a whole word


# --------------------------------------------------------------------------------------------- metrics


def test_registry_directions_and_names():
    assert METRICS.names() == [
        "accuracy",
        "balanced_accuracy",
        "exact_match",
        "macro_f1",
        "pass_at_1",
        "rouge_l",
    ]
    assert all(METRICS.get(n).higher_is_better for n in METRICS.names())
    with pytest.raises(SpilloverError, match="did you mean 'rouge_l'"):
        METRICS.get("rouge")


def test_registry_kinds_aliases_and_aggregation():
    pair_metrics = ["accuracy", "balanced_accuracy", "macro_f1"]
    assert metrics_for("classification") == metrics_for("multiple_choice") == pair_metrics
    assert metrics_for("generation") == ["accuracy", "exact_match", "pass_at_1", "rouge_l"]
    assert [get_metric(a).name for a in ("acc", "rougeL", "pass@1")] == ["accuracy", "rouge_l", "pass_at_1"]
    assert get_metric("pass_at_1").requires == {"tests_field": "the field with the unit tests"}
    assert get_metric("exact_match").aggregate([1.0, 0.0, 0.0, 1.0]) == 0.5
    with pytest.raises(SpilloverError, match=r"unknown metric 'bleu' available: accuracy, balanced_accuracy"):
        get_metric("bleu")
    with pytest.raises(ValueError, match="'rougeL' already names a metric"):  # nothing registered
        register_metric("rouge_2", kinds=("generation",), aliases=("rougeL",))
    with pytest.raises(ValueError, match="kinds must be loglikelihood and/or generation"):
        register_metric("bleu", kinds=("translation",))
    assert "rouge_2" not in METRICS and "bleu" not in METRICS


def test_accuracy_classification_and_generation():
    ex = Example(id="0", text="x", target="positive", row={}, options=("negative", "positive"), gold=1)
    task = TaskSpec(
        name="c", type="classification", test="t.jsonl", labels=["negative", "positive"], metric="accuracy"
    )
    assert score("accuracy", "positive", ex, task) == 1.0
    assert score("accuracy", "negative", ex, task) == 0.0
    gen = gen_task(metric="accuracy", extract="first_line")
    assert score("accuracy", " yes \nbecause", example("yes"), gen) == 1.0
    assert score("accuracy", "Yes", example("yes"), gen) == 0.0  # no normalisation beyond whitespace


def test_exact_match_answer_field_and_squad_normalisation():
    task = gen_task(answer_field="answer", extract="first_line")
    ex = example("long explanation", answer="the Eiffel Tower")
    assert score("exact_match", "Eiffel tower.\nIt is in Paris", ex, task) == 1.0
    assert score("exact_match", "The Louvre", ex, task) == 0.0


def test_exact_match_numbers_compare_by_value():
    task = gen_task(answer_field="answer", extract="last_number")
    assert score("exact_match", "so she has $18.00 left", example("x", answer="18"), task) == 1.0
    assert score("exact_match", "so 1,024 bytes", example("x", answer="1024"), task) == 1.0
    assert score("exact_match", "it is 5", example("x", answer="-5"), task) == 0.0  # SQuAD would say equal
    assert score("exact_match", "I do not know", example("x", answer="5"), task) == 0.0


def test_exact_match_without_answer_field_extracts_the_target():
    task = gen_task(extract="last_number")
    ex = example("Sally has x books\n2x = 18\nx = 9\n#### 9")
    assert score("exact_match", "Sally has 9 books.", ex, task) == 1.0
    assert score("exact_match", "#### 18", ex, task) == 0.0


def test_rouge_l_hand_computed():
    # LCS("the cat sat on the mat", "the cat is on the mat") = "the cat on the mat" = 5 of 6 tokens each side
    assert rouge_l_f("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # P = 2/4, R = 2/2: F = 2PR / (P + R) = 2/3
    assert rouge_l_f("a b c d", "a c") == pytest.approx(2 / 3)
    assert rouge_l_f("Cats running!", "cat runs") == pytest.approx(1.0)  # lower-cased, Porter-stemmed
    assert rouge_l_f("xyz", "abc") == 0.0


def test_rouge_l_max_over_references_field():
    task = gen_task(metric="rouge_l", references_field="references", extract="first_line")
    ex = example("unused target", references=["completely different words", "the cat is on the mat"])
    assert score("rouge_l", "the cat sat on the mat\nsecond line ignored", ex, task) == pytest.approx(5 / 6)
    plain = gen_task(metric="rouge_l")
    assert score("rouge_l", "a b c d", example("a c"), plain) == pytest.approx(2 / 3)


def test_pass_at_1_runs_extracted_code_against_tests():
    task = gen_task(metric="pass_at_1", tests_field="test", extract="code")
    ex = example("", test="assert add(2, 3) == 5\nassert add(-1, 1) == 0")
    good = "Sure!\n```python\ndef add(a, b):\n    return a + b\n```\nHope it helps."
    assert score("pass_at_1", good, ex, task) == 1.0
    assert score("pass_at_1", "```python\ndef add(a, b):\n    return a - b\n```", ex, task) == 0.0
    listed = example("", test=["assert add(1, 1) == 2", "assert add(0, 0) == 0"])
    assert score("pass_at_1", good, listed, task) == 1.0


# ------------------------------------------------------------------------------------------- bootstrap


# ------------------------------------------------------------------ pair metrics: macro-F1, balanced accuracy

# six rows, three classes: (predicted, gold). gold: 3 × class 0, 2 × class 1, 1 × class 2; predicted: 5 × 0, 1 × 1
PAIRS = np.array([(0, 0), (0, 0), (0, 0), (0, 1), (1, 1), (0, 2)])


def test_macro_f1_and_balanced_accuracy_by_hand():
    # TP = (3, 1, 0), predicted = (5, 1, 0), gold = (3, 2, 1)
    # F1 = 2·TP / (predicted + gold) = (6/8, 2/3, 0): macro = (3/4 + 2/3 + 0) / 3 = 17/36
    assert macro_f1_of(PAIRS) == pytest.approx(17 / 36)
    # recall = TP / gold = (1, 1/2, 0): balanced accuracy = 1/2 (accuracy is 4/6)
    assert balanced_accuracy_of(PAIRS) == pytest.approx(0.5)
    assert get_metric("macro_f1").aggregate(PAIRS.tolist()) == pytest.approx(17 / 36)
    assert get_metric("balanced_accuracy").of_predictions(PAIRS[:, 0], PAIRS[:, 1]) == pytest.approx(0.5)
    # majority collapse (always class 0): accuracy 3/6 reads as half right; F1 = (2·3/9, 0, 0), recall (1, 0, 0)
    collapsed = np.column_stack([np.zeros(6, dtype=int), PAIRS[:, 1]])
    assert macro_f1_of(collapsed) == pytest.approx(2 / 9)
    assert balanced_accuracy_of(collapsed) == pytest.approx(1 / 3)
    # a class only ever predicted counts in macro-F1 (F1 0) but not in balanced accuracy (no gold rows)
    extra = np.array([(0, 0), (1, 0)])
    assert macro_f1_of(extra) == pytest.approx((2 / 3 + 0) / 2) and balanced_accuracy_of(extra) == 0.5
    assert np.isnan(macro_f1_of(np.zeros((0, 2))))


def test_pair_metrics_vectorise_over_resamples():
    batch = np.stack([PAIRS, PAIRS[[0, 0, 1, 1, 4, 4]]])  # (2, 6, 2): the second has only classes 0 and 1
    assert macro_f1_of(batch) == pytest.approx([17 / 36, 1.0])
    assert balanced_accuracy_of(batch) == pytest.approx([0.5, 1.0])


def test_bootstrap_ci_of_a_pair_metric_resamples_rows():
    low, high = bootstrap_ci(PAIRS, n_boot=300, seed=0, statistic=macro_f1_of)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 6, size=(300, 6))
    expected = np.percentile([macro_f1_of(PAIRS[i]) for i in idx], [2.5, 97.5])
    assert (low, high) == pytest.approx(tuple(expected))


def test_classification_reports_macro_f1_and_balanced_accuracy_beside_its_metric():
    cls = TaskSpec(name="c", type="classification", test="t.jsonl", labels=["a", "b"], metric="accuracy")
    assert [m.name for m in reported_metrics(cls)] == ["accuracy", "macro_f1", "balanced_accuracy"]
    own_f1 = cls.model_copy(update={"metric": "macro_f1"})
    assert [m.name for m in reported_metrics(own_f1)] == ["macro_f1", "accuracy", "balanced_accuracy"]
    assert [m.name for m in reported_metrics(gen_task())] == ["exact_match"]
    assert "generation" not in REPORTED_BESIDE and get_metric("macro_f1").pairs
    ex = Example("0", "x", "b", {}, ("a", "b"), 1)
    assert get_metric("macro_f1").score("b", ex, cls) == 1.0  # the row's `correct`: the gold option chosen
    with pytest.raises(ValueError, match="does not fit a generation task"):
        TaskSpec(name="g", type="generation", test="t.jsonl", metric="macro_f1")


def test_bootstrap_ci_is_deterministic_and_brackets_the_mean():
    values = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0] * 5
    low, high = bootstrap_ci(values, seed=3)
    assert (low, high) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=4) != (low, high) or low == high
    assert low < np.mean(values) < high
    assert low >= 0.0 and high <= 1.0


def test_bootstrap_ci_matches_a_plain_numpy_bootstrap():
    values = np.array([0.2, 0.9, 0.4, 0.7, 0.1])
    rng = np.random.default_rng(0)
    means = values[rng.integers(0, 5, size=(200, 5))].mean(axis=1)
    expected = tuple(np.percentile(means, [5.0, 95.0]))
    assert bootstrap_ci(values, n_boot=200, seed=0, alpha=0.1) == pytest.approx(expected)


def test_bootstrap_ci_of_another_aggregation():
    values = np.array([0.0, 0.0, 1.0, 5.0, 9.0])
    rng = np.random.default_rng(0)
    medians = np.median(values[rng.integers(0, 5, size=(300, 5))], axis=1)
    expected = tuple(np.percentile(medians, [2.5, 97.5]))

    def median(scores: np.ndarray) -> np.ndarray:
        return np.median(scores, axis=-1)

    assert bootstrap_ci(values, n_boot=300, seed=0, statistic=median) == pytest.approx(expected)


def test_bootstrap_ci_degenerate_inputs():
    assert bootstrap_ci([0.5]) == (0.5, 0.5)
    assert bootstrap_ci([1.0] * 20) == (1.0, 1.0)
    low, high = bootstrap_ci([])
    assert np.isnan(low) and np.isnan(high)
