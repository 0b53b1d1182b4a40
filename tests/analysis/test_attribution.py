"""Spearman with bootstrap CI, attribution per measure, anomalies and the length-shift table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from spillover.analysis.attribution import (
    anomalies,
    attribute,
    length_shift_table,
    similarity_frames,
    spearman_ci,
)
from spillover.data.stats import dataset_stats
from spillover.data.tasks import Example


def test_spearman_hand_value_deterministic_ci_contains_rho():
    # d = rank differences (-1, 1, -1, 1, 0): rho = 1 - 6·4 / (5·24) = 0.8
    x, y = [1, 2, 3, 4, 5], [2, 1, 4, 3, 5]
    rho, low, high, p = spearman_ci(x, y, n_boot=500, seed=3)
    assert rho == pytest.approx(0.8)
    assert p == pytest.approx(sps.spearmanr(x, y).pvalue)
    assert -1 <= low <= rho <= high <= 1
    assert spearman_ci(x, y, n_boot=500, seed=3) == (rho, low, high, p)


def test_spearman_perfect_monotone_ci_is_a_point():
    rho, low, high, _ = spearman_ci([1, 2, 3, 4], [10, 20, 30, 400])
    assert (rho, low, high) == pytest.approx((1.0, 1.0, 1.0))


def test_spearman_nan_safe():
    rho, *_ = spearman_ci([1, 2, np.nan, 3, 4], [1, 2, 5, 3, np.nan])
    assert rho == pytest.approx(1.0)  # pairs (1,1), (2,2), (3,3)
    assert all(np.isnan(spearman_ci([1, 2], [1, 2])))
    assert all(np.isnan(spearman_ci([1, 1, 1, 1], [1, 2, 3, 4])))


SRC = ["a", "b", "c", "d"]
TGT = ["a", "b", "x", "y"]


def _sim(values) -> pd.DataFrame:
    return pd.DataFrame(np.asarray(values, dtype=float), index=SRC, columns=TGT)


def test_attribute_off_diagonal_by_default():
    # Off-diagonal cells: Δ rises exactly with similarity; the diagonal (a,a), (b,b) breaks it if included.
    sim = _sim(np.arange(16).reshape(4, 4))
    delta = sim.copy() * 0.01
    delta.loc["a", "a"], delta.loc["b", "b"] = 5.0, -5.0
    table = attribute(delta, {"semantic_cosine": sim, "none": sim * np.nan}, n_boot=200)
    row = table.loc["semantic_cosine"]
    assert row["rho"] == pytest.approx(1.0) and row["n_pairs"] == 14 and row["n_sources"] == 4
    # every resample of sources keeps Δ monotone in similarity: the interval is the point
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((1.0, 1.0))
    assert table.loc["none", "n_pairs"] == 0 and np.isnan(table.loc["none", "rho"])
    with_diag = attribute(delta, {"semantic_cosine": sim}, include_diagonal=True, n_boot=200)
    assert with_diag.loc["semantic_cosine", "n_pairs"] == 16
    assert with_diag.loc["semantic_cosine", "rho"] < 1.0


def test_attribute_interval_resamples_sources_by_hand():
    # Source a: Δ rises with similarity (rho 1 on its own); source b: Δ falls (rho −1). Both together:
    # centred ranks (−3, −1, 1, 3, −3, −1, 1, 3) and (−3, −1, 1, 3, 3, 1, −1, −3) are orthogonal, rho = 0.
    # Resampling the two sources gives {a, a} (rho 1), {b, b} (−1) or one of each (0) with probabilities
    # 1/4, 1/4, 1/2, so the 95% interval is (−1, 1); resampling the 8 cells would be much narrower.
    targets = ["t1", "t2", "t3", "t4"]
    delta = pd.DataFrame([[1, 2, 3, 4], [1, 2, 3, 4]], index=["a", "b"], columns=targets, dtype=float)
    sim = pd.DataFrame([[1, 2, 3, 4], [4, 3, 2, 1]], index=["a", "b"], columns=targets, dtype=float)
    row = attribute(delta, {"semantic_cosine": sim}, n_boot=2000, seed=0).loc["semantic_cosine"]
    assert row["rho"] == pytest.approx(0.0, abs=1e-12) and row["p"] == pytest.approx(1.0)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((-1.0, 1.0))
    assert (row["n_pairs"], row["n_sources"]) == (8, 2)
    _, cell_low, cell_high, _ = spearman_ci(delta.to_numpy().ravel(), sim.to_numpy().ravel(), n_boot=2000)
    assert cell_high - cell_low < 2.0


def test_anomalies_find_the_outlier_and_say_why():
    sim = _sim([[1.0, 0.8, 0.6, 0.5], [0.8, 1.0, 0.4, 0.9], [0.7, 0.3, 0.2, 0.35], [0.6, 0.5, 0.9, 0.1]])
    rng = np.random.default_rng(0)
    delta = 0.1 * sim + rng.normal(0, 0.002, size=sim.shape)
    delta.loc["c", "x"] = 0.2  # far above what its low similarity (least similar source on x) predicts
    out = anomalies(delta, {"semantic_cosine": sim, "label_js_distance": sim * np.nan}, top=3)
    first = out.iloc[0]
    assert (first["source"], first["target"]) == ("c", "x")
    assert first["residual"] > 0 and abs(first["std_residual"]) > 2
    assert first["note"].startswith("c → x: +20.0 points")
    assert "although it is the least similar source by semantic_cosine" in first["note"]
    assert len(out) == 3 and not ((out["source"] == "a") & (out["target"] == "a")).any()


def test_length_shift_table_by_hand():
    delta = pd.DataFrame([[0.1, -0.2]], index=["s"], columns=["t1", "t2"])
    lengths = pd.DataFrame(
        [
            {"model": "base", "target": "t1", "value": 10.0},
            {"model": "base", "target": "t2", "value": 4.0},
            {"model": "s", "target": "t1", "value": 3.0},
            {"model": "s", "target": "t2", "value": 6.0},
        ]
    )
    table = length_shift_table(delta, lengths)
    assert table["length_shift"].tolist() == [-7.0, 2.0]
    assert table["delta"].tolist() == [0.1, -0.2] and table["base_length"].tolist() == [10.0, 4.0]


def test_similarity_frames_are_sources_by_targets_with_nan_for_undefined(tokenizer):
    cls = [Example("0", "good film", "positive", {}, ("negative", "positive"), 1)]
    gen = [Example("1", "2+2?", "4", {})]
    stats = {
        "c": dataset_stats(cls, tokenizer, ["negative", "positive"]),
        "g": dataset_stats(gen, tokenizer, None),
    }
    frames = similarity_frames({"c": stats["c"]}, stats)
    assert list(frames["length_match"].columns) == ["c", "g"] and list(frames["length_match"].index) == ["c"]
    assert np.isnan(frames["length_match"].loc["c", "g"])  # a chosen label is no generated output length
    assert frames["label_shape_distance"].loc["c", "c"] == 0.0 and np.isnan(
        frames["label_shape_distance"].loc["c", "g"]
    )
