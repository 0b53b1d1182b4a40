"""Controls: mislabel, rebalance, subsample, spec validation and labels."""

from __future__ import annotations

from collections import Counter

import pytest

from spillover.data.tasks import Example
from spillover.data.transforms import (
    TRANSFORMS,
    apply_transforms,
    check_transforms,
    describe,
    mislabel,
    rebalance,
    subsample,
)
from spillover.errors import SpilloverError

LABELS = ("negative", "neutral", "positive")


def _data(counts: dict[str, int]) -> list[Example]:
    out = []
    for label, n in counts.items():
        for _ in range(n):
            i = len(out)
            out.append(Example(f"e{i}", f"text {i}", label, {"label": label}, LABELS, LABELS.index(label)))
    return out


def test_registry_names():
    assert TRANSFORMS.names() == ["mislabel", "rebalance", "subsample", "target_field"]


def test_target_field_trains_on_another_field():
    rows = [Example("1", "2 + 2?", "2 + 2 = 4\n#### 4", {"answer": 4}), Example("2", "x", "y", {})]
    out = apply_transforms(rows[:1], [{"name": "target_field", "field": "answer"}])
    assert out[0].target == "4" and out[0].text == "2 + 2?"
    with pytest.raises(SpilloverError, match="has no field 'answer'"):
        apply_transforms(rows, [{"name": "target_field", "field": "answer"}])


def test_mislabel_all_wrong_and_original_recorded():
    data = _data({"negative": 4, "neutral": 3, "positive": 3})
    out = mislabel(data, fraction=1.0, seed=1)
    assert len(out) == len(data)
    for before, after in zip(data, out, strict=True):
        assert after.target != before.target and after.options[after.gold] == after.target
        assert after.row["_orig_target"] == before.target and after.row["_orig_gold"] == before.gold
        assert after.id == before.id and after.text == before.text
    assert "_orig_target" not in data[0].row  # the input rows are not mutated
    assert mislabel(data, 1.0, seed=1) == out


def test_mislabel_half_is_exactly_half():
    data = _data({"negative": 5, "positive": 5})
    out = mislabel(data, fraction=0.5, seed=0)
    assert sum(a.target != b.target for a, b in zip(data, out, strict=True)) == 5
    assert mislabel(data, fraction=0.0) == data


def test_mislabel_letter_targets_and_errors():
    mc = Example("q", "Which?", "B", {}, ("x", "y", "z"), 1)
    (out,) = mislabel([mc], 1.0)
    assert out.target in {"A", "C"} and out.target == chr(65 + out.gold)
    with pytest.raises(SpilloverError, match="classification"):
        mislabel([Example("g", "2+2?", "4", {})])
    with pytest.raises(SpilloverError, match=r"\[0, 1\]"):
        mislabel(_data({"negative": 1}), fraction=1.5)


def test_rebalance_uniform_and_explicit_counts():
    data = _data({"negative": 6, "neutral": 3, "positive": 1})
    out = rebalance(data, "uniform", seed=0, size=9)
    assert Counter(e.target for e in out) == {"negative": 3, "neutral": 3, "positive": 3}
    assert len({e.id for e in out}) == 9  # up-sampled copies get distinct ids
    assert {e.id for e in out if e.target == "positive"} >= {"e9"}  # every original kept before copies
    out = rebalance(data, {"negative": 0.5, "positive": 0.5}, seed=0)
    assert Counter(e.target for e in out) == {"negative": 5, "positive": 5}
    out = rebalance(data, {"negative": 1, "neutral": 1, "positive": 1}, size=10)
    assert sorted(Counter(e.target for e in out).values()) == [3, 3, 4]  # largest remainder, exact total


def test_rebalance_errors():
    data = _data({"negative": 2, "positive": 2})
    with pytest.raises(SpilloverError, match="unknown label 'postive'"):
        rebalance(data, {"postive": 1})
    with pytest.raises(SpilloverError, match="no examples"):
        rebalance(data, {"neutral": 1})


def test_subsample_fixed_size_order_and_replace():
    data = _data({"negative": 10})
    out = subsample(data, 4, seed=2)
    assert len(out) == 4 and [e.id for e in out] == sorted((e.id for e in out), key=lambda s: int(s[1:]))
    assert subsample(data, 4, seed=2) == out
    with pytest.raises(SpilloverError, match="replace"):
        subsample(data, 11)
    big = subsample(data, 13, replace=True)
    assert len(big) == 13 and len({e.id for e in big}) == 13


def test_apply_transforms_and_describe():
    data = _data({"negative": 6, "positive": 2})
    specs = [{"name": "rebalance"}, {"name": "mislabel", "fraction": 1}]
    out = apply_transforms(data, specs)
    assert Counter(e.row["_orig_target"] for e in out) == {"negative": 4, "positive": 4}
    assert describe(specs) == "rebalance(distribution=uniform)+mislabel(fraction=1.0)"
    assert describe([{"name": "subsample", "n": 100, "seed": 3}]) == "subsample(n=100, seed=3)"
    assert describe([{"name": "rebalance", "distribution": {"positive": 0.8, "negative": 0.2}}]) == (
        "rebalance(distribution={negative:0.2,positive:0.8})"
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "mislabl"}, "did you mean 'mislabel'"),
        ({"name": "mislabel", "frac": 0.5}, "allowed: fraction, seed"),
        ({"name": "subsample"}, "missing parameter"),
        ({"fraction": 0.5}, "needs a `name`"),
    ],
)
def test_bad_specs_are_user_errors(spec, message):
    with pytest.raises(SpilloverError, match=message):
        apply_transforms(_data({"negative": 2}), [spec])


@pytest.mark.parametrize("name", ["mislabel", "rebalance", "subsample"])
def test_negative_seed_is_refused_at_the_edge(name):
    """Was: accepted, then every statistics job failed in numpy (found by the bad-input properties)."""
    params = {"seed": -1} | ({"n": 2} if name == "subsample" else {})
    with pytest.raises(SpilloverError, match="seed = -1"):
        check_transforms([{"name": name, **params}])
