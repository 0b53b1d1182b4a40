"""PCA latent traits of a transfer matrix (methods §1.2), scikit-learn style.

Rows are fine-tuned models, columns targets (default input: Δ). Each column is centred (and, with
`standardize=True`, divided by its standard deviation, ddof=0; a constant column keeps scale 1 so it
contributes zeros instead of NaN). The SVD of the centred matrix Z = U S Vᵀ gives:

- `components_` = Vᵀ[:k]  (k, N), unit vectors; `loadings_` is its transpose as a DataFrame, i.e. the
  loadings here are the eigenvector coefficients (multiply by sqrt(`explained_variance_`) for
  covariance-scaled loadings);
- `explained_variance_` = S² / (I − 1) and `explained_variance_ratio_` = S² / ΣS² (zeros when the matrix
  has no variance at all, e.g. a single row);
- `projections_` = Z @ components_ᵀ  (I, k), each model's "ability profile".

Sign convention: each component is flipped so its largest-|loading| entry (first one on near-ties) is
positive; projections flip with it, so results are deterministic across LAPACK builds.

Default number of components: min(I − 1, N) (at least 1): after centring, the rank is at most I − 1 and
further components would carry zero variance and arbitrary directions. Missing cells (NaN) are replaced
by their column mean, i.e. they contribute 0 after centring; a warning names how many.

`fit_held_out` fits on some rows only (the transfer study leaves its control sources out of the fit) and
projects the rest onto the fitted components.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


class TransferPCA:
    """PCA over a models × targets matrix. `fit(delta)` then read the trailing-underscore attributes."""

    def __init__(self, n_components: int | None = None, standardize: bool = False) -> None:
        self.n_components = n_components
        self.standardize = standardize

    def _prepare(self, frame: pd.DataFrame) -> np.ndarray:
        """Centred (and scaled) values of `frame` in the fitted column order: (rows, N)."""
        x = frame.reindex(columns=self.feature_names_in_).to_numpy(dtype=float)
        x = np.where(np.isnan(x), self.mean_.to_numpy(), x)
        return (x - self.mean_.to_numpy()) / self.scale_.to_numpy()

    def fit(self, delta: pd.DataFrame) -> TransferPCA:
        """Fit on `delta` (I models × N targets). Returns self."""
        if delta.shape[0] < 1 or delta.shape[1] < 1:
            raise ValueError(f"TransferPCA needs at least one row and one column, got shape {delta.shape}")
        x = delta.to_numpy(dtype=float)
        n_missing = int(np.isnan(x).sum())
        if n_missing:
            log.warning("TransferPCA: %d missing cell(s) replaced by their column mean", n_missing)
        mean = np.nan_to_num(np.nanmean(np.where(np.isnan(x).all(axis=0), 0.0, x), axis=0))
        std = np.nanstd(np.where(np.isnan(x), mean, x), axis=0)
        self.feature_names_in_ = list(delta.columns)
        self.mean_ = pd.Series(mean, index=delta.columns)
        use_std = self.standardize and delta.shape[0] > 1
        self.scale_ = pd.Series(np.where(use_std & (std > 0), std, 1.0), index=delta.columns)
        z = self._prepare(delta)
        _, s, vt = np.linalg.svd(z, full_matrices=False)
        k = self._n_kept(*z.shape)
        self.components_ = _fix_signs(vt[:k])
        self.singular_values_ = s[:k]
        self.n_components_, self.n_samples_ = k, z.shape[0]
        total = float((s**2).sum())
        if total <= 0:
            log.warning("TransferPCA: the matrix has no variance; variance ratios are set to 0")
        self.explained_variance_ = s[:k] ** 2 / max(z.shape[0] - 1, 1)
        self.explained_variance_ratio_ = s[:k] ** 2 / total if total > 0 else np.zeros(k)
        self.cumulative_variance_ratio_ = np.cumsum(self.explained_variance_ratio_)
        names = [f"PC{i + 1}" for i in range(k)]
        self.loadings_ = pd.DataFrame(self.components_.T, index=delta.columns, columns=names)
        self.projections_ = pd.DataFrame(z @ self.components_.T, index=delta.index, columns=names)
        return self

    def _n_kept(self, n_rows: int, n_cols: int) -> int:
        limit = min(n_rows, n_cols)
        if self.n_components is None:
            return max(1, min(n_rows - 1, n_cols))
        if self.n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {self.n_components}")
        if self.n_components > limit:
            log.warning(
                "TransferPCA: n_components=%d > min(rows, cols)=%d; using %d", self.n_components, limit, limit
            )
        return min(self.n_components, limit)

    def transform(self, delta: pd.DataFrame) -> pd.DataFrame:
        """Project new rows (same targets as fit; extra columns ignored) onto the fitted components."""
        absent = [c for c in self.feature_names_in_ if c not in delta.columns]
        if absent:
            raise ValueError(f"transform: missing target column(s) {', '.join(map(str, absent))}")
        proj = self._prepare(delta) @ self.components_.T
        return pd.DataFrame(proj, index=delta.index, columns=self.loadings_.columns)

    def fit_transform(self, delta: pd.DataFrame) -> pd.DataFrame:
        return self.fit(delta).projections_

    def suggest_labels(self, task_types: Mapping[str, str], top: int = 2) -> list[str]:
        """A name per component from the task types of its `top` highest-|loading| targets.

        "sentiment / toxicity" when those loadings share a sign; "sentiment vs math" when they oppose
        (positive side first). Targets missing from `task_types` stand for themselves.
        """
        labels = []
        for name in self.loadings_.columns:
            col = self.loadings_[name]
            order = np.argsort(-np.abs(col.to_numpy()), kind="stable")[:top]
            pos = [task_types.get(t, str(t)) for t in col.index[order] if col[t] >= 0]
            neg = [task_types.get(t, str(t)) for t in col.index[order] if col[t] < 0]
            side = lambda xs: " / ".join(dict.fromkeys(xs))  # noqa: E731
            labels.append(f"{side(pos)} vs {side(neg)}" if pos and neg else side(pos or neg))
        return labels


def fit_held_out(pca: TransferPCA, delta: pd.DataFrame, held_out: Sequence[str]) -> pd.DataFrame:
    """Fit `pca` on the rows of `delta` not in `held_out` and project every row: (I, k) in `delta`'s order.

    Fitted rows get their `projections_`; held-out rows (e.g. control sources) go through `transform`,
    so they are placed by the fitted means, scales and components without shaping them.
    """
    fitted = delta.loc[[r for r in delta.index if r not in set(held_out)]]
    if fitted.empty:
        raise ValueError("fit_held_out: every row is held out; nothing to fit on")
    pca.fit(fitted)
    rest = delta.loc[[r for r in delta.index if r in set(held_out)]]
    return pd.concat([pca.projections_, pca.transform(rest)]).loc[delta.index]


def _fix_signs(components: np.ndarray) -> np.ndarray:
    """Flip each row so its largest-|value| entry (the first within 1e-9 of the largest) is positive."""
    out = components.copy()
    for i, row in enumerate(out):
        mags = np.abs(row)
        if row[np.flatnonzero(mags >= mags.max() - 1e-9)[0]] < 0:
            out[i] = -row
    return out
