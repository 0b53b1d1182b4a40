"""Transfer matrix: M, b, Δ, relative Δ and asymmetry against hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spillover.analysis.transfer import diagonal_mask, task_of, transfer_tables
from spillover.errors import SpilloverError


def _long(cells: dict[tuple[str, str], float]) -> pd.DataFrame:
    return pd.DataFrame([{"model": m, "target": t, "value": v} for (m, t), v in cells.items()])


SCORES = _long(
    {
        ("base", "sst2"): 0.5,
        ("base", "gsm8k"): 0.1,
        ("sst2", "sst2"): 0.9,
        ("sst2", "gsm8k"): 0.15,
        ("gsm8k", "sst2"): 0.4,
        ("gsm8k", "gsm8k"): 0.3,
    }
)


def test_delta_relative_and_asymmetry_by_hand():
    t = transfer_tables(SCORES, sources=["sst2", "gsm8k"], targets=["sst2", "gsm8k"])
    assert list(t.scores.index) == ["sst2", "gsm8k"] and list(t.scores.columns) == ["sst2", "gsm8k"]
    assert t.base.tolist() == [0.5, 0.1]
    np.testing.assert_allclose(t.delta.to_numpy(), [[0.4, 0.05], [-0.1, 0.2]])
    # Δ / b: 0.4/0.5, 0.05/0.1, -0.1/0.5, 0.2/0.1
    np.testing.assert_allclose(t.relative.to_numpy(), [[0.8, 0.5], [-0.2, 2.0]])
    (row,) = t.asymmetry.to_dict("records")
    assert row["a"] == "sst2" and row["b"] == "gsm8k"
    assert row["delta_ab"] == pytest.approx(0.05) and row["delta_ba"] == pytest.approx(-0.1)
    assert row["asymmetry"] == pytest.approx(0.15)


def test_relative_uses_eps_when_base_is_zero_and_keeps_missing_cells():
    scores = _long({("base", "a"): 0.0, ("base", "b"): 0.2, ("x", "a"): 0.01})
    t = transfer_tables(scores, eps=1e-3)
    assert t.relative.at["x", "a"] == pytest.approx(10.0)  # 0.01 / 1e-3
    assert np.isnan(t.delta.at["x", "b"]) and t.asymmetry.empty


def test_default_order_is_first_appearance_and_variants_map_to_their_task():
    scores = _long(
        {("base", "sst2"): 0.5, ("sst2+mislabel(fraction=1.0)", "sst2"): 0.1, ("sst2", "sst2"): 0.9}
    )
    t = transfer_tables(scores)
    assert list(t.delta.index) == ["sst2+mislabel(fraction=1.0)", "sst2"]
    assert task_of("sst2+mislabel(fraction=1.0)") == "sst2"
    assert diagonal_mask(t.delta).tolist() == [[True], [True]]


def test_missing_base_and_duplicates_are_errors():
    with pytest.raises(SpilloverError, match="base"):
        transfer_tables(_long({("x", "a"): 0.1}))
    dup = pd.concat([SCORES, SCORES.head(1)])
    with pytest.raises(SpilloverError, match="several values"):
        transfer_tables(dup)


def test_the_matrix_holds_each_targets_own_metric_when_others_are_reported_beside_it():
    own = SCORES.assign(metric=["accuracy", "rouge_l"] * 3)
    beside = SCORES[SCORES["target"] == "sst2"].assign(metric="macro_f1", value=0.0)
    scores = pd.concat([own, beside], ignore_index=True)
    with pytest.raises(SpilloverError, match="several values"):
        transfer_tables(scores)
    t = transfer_tables(scores, metrics={"sst2": "accuracy", "gsm8k": "rouge_l"})
    np.testing.assert_allclose(t.delta.to_numpy(), [[0.4, 0.05], [-0.1, 0.2]])
