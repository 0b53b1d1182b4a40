"""TransferPCA against a PCA computed by hand, plus degenerate shapes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from spillover.analysis.traits import TransferPCA, fit_held_out

R2 = math.sqrt(2)


def _frame(values, rows=None, cols=None) -> pd.DataFrame:
    values = np.asarray(values, dtype=float)
    rows = rows or [f"m{i}" for i in range(values.shape[0])]
    cols = cols or [f"t{j}" for j in range(values.shape[1])]
    return pd.DataFrame(values, index=rows, columns=cols)


def test_pca_3x2_by_hand():
    # Columns already centred: ZᵀZ = [[8, 4], [4, 8]], eigenvalues 12 (v = (1, 1)/√2) and 4 (v = (1, -1)/√2).
    # The offset (10, 5) checks centring.
    x = _frame(np.array([[2, 0], [0, 2], [-2, -2]]) + [10, 5], cols=["a", "b"])
    pca = TransferPCA().fit(x)
    assert pca.n_components_ == 2
    np.testing.assert_allclose(pca.mean_.to_numpy(), [10, 5])
    np.testing.assert_allclose(pca.explained_variance_ratio_, [0.75, 0.25])
    np.testing.assert_allclose(pca.cumulative_variance_ratio_, [0.75, 1.0])
    np.testing.assert_allclose(pca.explained_variance_, [6.0, 2.0])  # S² / (I - 1)
    np.testing.assert_allclose(pca.loadings_.to_numpy(), [[1 / R2, 1 / R2], [1 / R2, -1 / R2]], atol=1e-12)
    assert list(pca.loadings_.index) == ["a", "b"] and list(pca.loadings_.columns) == ["PC1", "PC2"]
    # projections = Z @ Vᵀ: PC1 = (2+0, 0+2, -2-2)/√2, PC2 = (2-0, 0-2, -2+2)/√2
    np.testing.assert_allclose(pca.projections_.to_numpy(), [[R2, R2], [R2, -R2], [-2 * R2, 0]], atol=1e-12)
    np.testing.assert_allclose(pca.transform(x).to_numpy(), pca.projections_.to_numpy(), atol=1e-12)


def test_held_out_rows_are_projected_not_fitted():
    # The 3x2 example above plus a control row (12, 5): the fit is the same as without it, and the control
    # is centred by the fitted mean (10, 5) → z = (2, 0) → projections (2/√2, 2/√2) = (√2, √2).
    x = _frame(np.array([[2, 0], [0, 2], [-12, -2], [-2, -2]]) + [10, 5], cols=["a", "b"])
    x.iloc[2] = [12, 5]
    proj = fit_held_out(pca := TransferPCA(), x, held_out=["m2"])
    np.testing.assert_allclose(pca.mean_.to_numpy(), [10, 5])
    np.testing.assert_allclose(pca.explained_variance_ratio_, [0.75, 0.25])
    assert list(proj.index) == ["m0", "m1", "m2", "m3"]
    np.testing.assert_allclose(proj.to_numpy(), [[R2, R2], [R2, -R2], [R2, R2], [-2 * R2, 0]], atol=1e-12)
    with pytest.raises(ValueError, match="every row is held out"):
        fit_held_out(TransferPCA(), x, held_out=list(x.index))


def test_sign_convention_largest_loading_positive():
    x = _frame([[3, -1], [-3, 1], [1, 0.2]])
    pca = TransferPCA().fit(x)
    for name in pca.loadings_.columns:
        col = pca.loadings_[name].to_numpy()
        assert col[np.argmax(np.abs(col))] > 0
    np.testing.assert_allclose(TransferPCA().fit(-x).loadings_.abs(), pca.loadings_.abs(), atol=1e-12)


def test_standardize_by_hand_and_constant_column_gives_no_nan():
    # Standardised columns are identical: z = (-√1.5, 0, √1.5); PC1 = (1, 1, 0)/√2, projection = ±√3.
    x = _frame([[1, 10, 7], [2, 20, 7], [3, 30, 7]])
    pca = TransferPCA(standardize=True).fit(x)
    assert not np.isnan(pca.loadings_.to_numpy()).any()
    assert pca.explained_variance_ratio_[0] == pytest.approx(1.0)
    np.testing.assert_allclose(pca.loadings_["PC1"].to_numpy(), [1 / R2, 1 / R2, 0], atol=1e-12)
    np.testing.assert_allclose(
        pca.projections_["PC1"].to_numpy(), [-math.sqrt(3), 0, math.sqrt(3)], atol=1e-12
    )


@pytest.mark.parametrize("shape", [(1, 4), (2, 4), (3, 6), (6, 3), (5, 1)])
def test_degenerate_and_wide_or_tall_shapes_do_not_crash(shape):
    x = _frame(np.random.default_rng(0).normal(size=shape))
    pca = TransferPCA().fit(x)
    k = pca.n_components_
    assert k == max(1, min(shape[0] - 1, shape[1]))
    assert pca.loadings_.shape == (shape[1], k) and pca.projections_.shape == (shape[0], k)
    assert np.isfinite(pca.explained_variance_ratio_).all()
    if shape[0] > 1:
        assert pca.cumulative_variance_ratio_[-1] == pytest.approx(1.0)


def test_n_components_is_clipped_and_nan_cells_are_imputed():
    x = _frame([[1, 2, np.nan], [3, 1, 0], [0, 0, 1]])
    pca = TransferPCA(n_components=5).fit(x)
    assert pca.n_components_ == 3 and np.isfinite(pca.projections_.to_numpy()).all()


def test_suggest_labels_from_top_loading_task_types():
    # PC1 moves sentiment + toxicity together; PC2 opposes them to math.
    x = _frame(
        [[2, 2, 0.5], [-2, -2, -0.5], [0.3, -0.3, 1], [-0.3, 0.3, -1]],
        cols=["sst2", "hate", "gsm8k"],
    )
    pca = TransferPCA(n_components=2).fit(x)
    types = {"sst2": "sentiment", "hate": "toxicity", "gsm8k": "math"}
    labels = pca.suggest_labels(types, top=2)
    assert labels[0] == "sentiment / toxicity"
    assert pca.suggest_labels(types, top=1)[1] == "math"


def test_suggest_labels_names_opposing_sides():
    x = _frame([[2, -2], [-2, 2], [1, -1.1]], cols=["sst2", "gsm8k"])
    pca = TransferPCA(n_components=1).fit(x)
    assert pca.suggest_labels({"sst2": "sentiment", "gsm8k": "math"}) == ["math vs sentiment"]
