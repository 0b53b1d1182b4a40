"""Transfer-row prediction (issue 26): hand-computed predictors, the LOSO metrics, and a planted-structure
study the regressor must recover."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spillover.analysis.prediction import (
    COMBINED,
    GRADIENT,
    GRADIENT_FEATURE,
    MEAN_ROW,
    SEMANTIC,
    STATS,
    TASK_TYPE,
    SourceFeatures,
    Study,
    evaluate_loso,
    predict_row,
    predicted_table,
)
from spillover.errors import SpilloverError

TARGETS = ["t1", "t2"]


def _study(delta_rows, grads=None, types=None, q=None, train_seconds=100.0) -> Study:
    sources = [f"s{i}" for i in range(len(delta_rows))]
    delta = pd.DataFrame(delta_rows, index=sources, columns=TARGETS, dtype=float)
    feats = {}
    for i, s in enumerate(sources):
        cells = {GRADIENT_FEATURE: dict(zip(TARGETS, grads[i], strict=True))} if grads else {}
        feats[s] = SourceFeatures(
            task_type=(types or ["classification"] * len(sources))[i],
            to_targets=cells,
            cost_seconds={"gradient": 2.0, "stats": 1.0},
            train_seconds=train_seconds,
        )
    q_frame = pd.DataFrame(q if q is not None else 0.0, index=sources, columns=TARGETS, dtype=float)
    return Study(delta=delta, q=q_frame, features=feats)


def test_gradient_slope_is_the_least_squares_fit_of_centred_cells():
    # Δ = mean_t + 2·(g − mean_t g) exactly: the fitted slope is 2
    grads = [[0.1, 0.5], [0.3, 0.1], [0.5, 0.3]]
    mean_g = np.mean(grads, axis=0)  # (0.3, 0.3)
    mu = np.array([0.05, -0.10])
    rows = [mu + 2 * (np.array(g) - mean_g) for g in grads]
    study = _study(rows, grads)
    new = SourceFeatures(task_type=None, to_targets={GRADIENT_FEATURE: {"t1": 0.6, "t2": 0.0}})
    row = predict_row(study, new, GRADIENT)
    assert row.to_numpy() == pytest.approx(mu + 2 * (np.array([0.6, 0.0]) - mean_g))


def test_stats_kernel_weights_min_max_scaled_and_averaged():
    study = _study([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    # semantic: s0 most similar (scaled 1), s1 least (0), s2 0.5; a distance measure flips: s1 nearest
    new = SourceFeatures(
        task_type=None,
        to_sources={
            "semantic_cosine": {"s0": 0.9, "s1": 0.1, "s2": 0.5},
            "label_shape_distance": {"s0": 2.0, "s1": 0.0, "s2": 1.0},
        },
    )
    semantic = predict_row(study, new, SEMANTIC)  # weights (1, 0, 0.5)
    assert semantic.to_numpy() == pytest.approx([(1.0 + 0.25) / 1.5, (0.0 + 0.25) / 1.5])
    stats = predict_row(study, new, STATS)  # weights mean((1, 0, .5), (0, 1, .5)) = (.5, .5, .5)
    assert stats.to_numpy() == pytest.approx([0.5, 0.5])


def test_task_type_baseline_and_mean_row():
    study = _study(
        [[1.0, 1.0], [3.0, -1.0], [5.0, 0.0]], types=["classification", "generation", "generation"]
    )
    gen = SourceFeatures(task_type="generation")
    assert predict_row(study, gen, TASK_TYPE).to_numpy() == pytest.approx([4.0, -0.5])
    assert predict_row(study, SourceFeatures(task_type="other"), TASK_TYPE).to_numpy() == pytest.approx(
        [3.0, 0.0]
    )
    assert predict_row(study, gen, MEAN_ROW, exclude="s2").to_numpy() == pytest.approx([2.0, 0.0])


def test_loso_metrics_by_hand():
    # mean_row LOSO predictions: s0 ← mean(s1, s2) = (2, 0.5); s1 ← (1.5, 1); s2 ← (1, 0.5)
    study = _study(
        [[1.0, 1.0], [2.0, 0.0], [1.0, 1.0]],
        q=[[0.01, 0.5], [0.01, 0.01], [0.5, 0.5]],
    )
    row = evaluate_loso(study, [MEAN_ROW]).iloc[0]
    # significant cells: (s0,t1) Δ 1 pred 2 ✓, (s1,t1) Δ 2 pred 1.5 ✓, (s1,t2) Δ 0 pred 1: sign 0 vs + ✗
    assert row["sign_accuracy"] == pytest.approx(2 / 3)
    # t1: best measured 2 (s1); predicted ranking picks s0 (2.0) → regret 1. t2: best 1 (s0, s2); the
    # prediction picks s1 (1.0) → regret 1
    assert row["regret"] == pytest.approx(1.0)
    assert row["cost_fraction"] == 0.0
    assert np.isnan(row["spearman"])  # 2 targets: Spearman needs 3 cells per row
    assert evaluate_loso(study, [COMBINED]).iloc[0]["cost_fraction"] == pytest.approx(3.0 / 100.0)


def test_planted_structure_is_recovered_and_beats_the_baselines():
    rng = np.random.default_rng(0)
    sources, targets = [f"s{i}" for i in range(10)], [f"t{j}" for j in range(8)]
    g = rng.normal(size=(10, 8))
    f1 = rng.normal(size=(10, 8))
    noise_feature = rng.normal(size=(10, 8))
    offset = rng.normal(scale=0.5, size=8)
    delta = pd.DataFrame(offset + 1.5 * g - 0.8 * f1 + rng.normal(scale=0.05, size=(10, 8)), sources, targets)
    feats = {
        s: SourceFeatures(
            task_type="classification",
            to_targets={
                GRADIENT_FEATURE: dict(zip(targets, g[i], strict=True)),
                "length_match": dict(zip(targets, f1[i], strict=True)),
                "style_cosine": dict(zip(targets, noise_feature[i], strict=True)),
            },
            cost_seconds={"gradient": 1.0, "stats": 1.0},
            train_seconds=50.0,
        )
        for i, s in enumerate(sources)
    }
    study = Study(delta=delta, q=pd.DataFrame(0.0, sources, targets), features=feats)
    table = evaluate_loso(study, [COMBINED, GRADIENT, MEAN_ROW]).set_index("method")
    assert table.at[COMBINED, "spearman"] > 0.95
    assert table.at[COMBINED, "spearman"] > table.at[GRADIENT, "spearman"] > table.at[MEAN_ROW, "spearman"]
    assert table.at[COMBINED, "regret"] < 0.05
    assert table.at[COMBINED, "cost_fraction"] == pytest.approx(2 / 50)
    # a new source built from the same structure: predicted within the noise
    gn, fn = rng.normal(size=8), rng.normal(size=8)
    new = SourceFeatures(
        task_type="classification",
        to_targets={
            GRADIENT_FEATURE: dict(zip(targets, gn, strict=True)),
            "length_match": dict(zip(targets, fn, strict=True)),
            "style_cosine": dict(zip(targets, rng.normal(size=8), strict=True)),
        },
    )
    truth = offset + 1.5 * gn - 0.8 * fn
    table = predicted_table(study, "new", new, COMBINED)
    assert list(table.columns) == ["source", "target", "predicted_delta", "low", "high"]
    assert np.abs(table["predicted_delta"].to_numpy() - truth).max() < 0.3
    assert ((table["low"] < table["predicted_delta"]) & (table["predicted_delta"] < table["high"])).all()


def test_bad_inputs_are_named():
    study = _study([[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(SpilloverError, match="unknown prediction method 'magic'; known: stats"):
        predict_row(study, SourceFeatures(task_type=None), "magic")
    with pytest.raises(SpilloverError, match="at least 2 measured sources; it has 1"):
        _study([[1.0, 0.0]])
