"""Predicting a source's signed transfer row before fine-tuning on it (issue 26), and checking the
prediction by leave-one-source-out (LOSO) on a finished transfer study.

Everything here is arithmetic on tables a transfer study already has; the signals that need the model
(gradients) are computed by `studies.transfer.predict` and come in as frames.

- Δ: sources × targets, the measured transfer matrix (tuned − base on the target's own metric).
- A *predictor* maps (the measured rows of the other sources, their features, the new source's
  features) to a predicted row over the targets. Each is usable alone:
  - `mean_row`: the mean measured row (what every source does to a target); the "knows nothing about the
    source" reference every other method has to beat.
  - `task_type`: the mean row of the measured sources of the new source's task type (baseline).
  - `semantic`: the measured rows weighted by the semantic similarity of the new source's data to each
    measured source's data (baseline; `stats`'s kernel with one measure).
  - `stats`: the same kernel over every dataset statistic of methods.md §1.4 (lengths, label shape, style,
    semantics, syntax): each measure min–max scaled over the measured sources, then averaged.
  - `gradient`: Δ(s, t) − mean_t = b · (g(s, t) − mean_t of g), one slope b fitted over the measured cells,
    g = cosine between the source's and the target's mean LoRA gradient at the base model.
  - `probe`: the same with g = the drop of the target's loss after a short training probe on the source.
  - `combined`: the same centred regression on every cell feature (the source–target similarities, the
    gradient cosine, the probe's loss drop), ridge-regularised on unit-sd features (scikit-learn).
- `evaluate_loso`: per method, mean Spearman ρ between predicted and measured rows, sign accuracy on the
  cells the paired test calls significant, regret of picking each target's best source by prediction, and
  the signal's cost as a fraction of the fine-tune it replaces.
- Intervals: a prediction's `low`/`high` are ± the 95th percentile of the method's absolute LOSO residuals
  on the study (split-conformal style; NaN until the study has LOSO residuals for the method).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps

from spillover.errors import SpilloverError

MEAN_ROW, TASK_TYPE, SEMANTIC, STATS, GRADIENT, PROBE, COMBINED = (
    "mean_row",
    "task_type",
    "semantic",
    "stats",
    "gradient",
    "probe",
    "combined",
)
METHODS = (STATS, GRADIENT, PROBE, COMBINED, SEMANTIC, TASK_TYPE, MEAN_ROW)
BASELINES = (SEMANTIC, TASK_TYPE, MEAN_ROW)
GRADIENT_FEATURE = "gradient_cosine"
PROBE_FEATURE = "probe_loss_gain"


@dataclass
class SourceFeatures:
    """What is known about one source without fine-tuning on it.

    `to_sources[m]`: {measured source: similarity measure m between this source's data and that source's
    data} (methods.md §1.4 measures; names ending in "distance" are lower = more similar).
    `to_targets[f]`: {target: cell feature f of (this source, target)}: the same measures against each
    target's test data, and `gradient_cosine`. `task_type`: the source task's type. `cost_seconds`:
    {signal: seconds it took for this source}; `train_seconds`: the fine-tune's seconds, when known."""

    task_type: str | None
    to_sources: dict[str, dict[str, float]] = field(default_factory=dict)
    to_targets: dict[str, dict[str, float]] = field(default_factory=dict)
    cost_seconds: dict[str, float] = field(default_factory=dict)
    train_seconds: float | None = None


def _kernel_weights(similarities: Mapping[str, Mapping[str, float]], sources: Sequence[str]) -> np.ndarray:
    """(S,) nonnegative weights of the measured sources from {measure: {source: similarity}}: each measure
    min–max scaled over the sources (distances flipped), averaged over the measures known for a source.
    Uniform when nothing distinguishes them."""
    scaled = []
    for name, values in similarities.items():
        v = np.array([values.get(s, np.nan) for s in sources], dtype=float)
        if name.endswith("distance"):
            v = -v
        ok = ~np.isnan(v)
        if ok.sum() < 2 or np.ptp(v[ok]) == 0:
            continue
        scaled.append((v - np.nanmin(v)) / np.ptp(v[ok]))
    if not scaled:
        return np.ones(len(sources))
    w = np.nanmean(np.vstack(scaled), axis=0)
    w = np.nan_to_num(w, nan=0.0)
    return w if w.sum() > 0 else np.ones(len(sources))


def _weighted_row(delta: pd.DataFrame, w: np.ndarray) -> pd.Series:
    """Σ w_s Δ_s / Σ w_s per target, over the sources with a value there."""
    d = delta.to_numpy(dtype=float)
    ok = ~np.isnan(d)
    num = (np.where(ok, d, 0.0) * w[:, None]).sum(axis=0)
    den = (ok * w[:, None]).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.Series(np.where(den > 0, num / np.where(den > 0, den, 1), np.nan), index=delta.columns)


def _centred(frame: pd.DataFrame) -> pd.DataFrame:
    return frame - frame.mean(axis=0)


def _cell_design(
    feats: Mapping[str, pd.DataFrame], names: Sequence[str], delta: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """Cells of the measured sources: X (cells, features) centred per target, y = Δ centred per target;
    cells with any NaN dropped."""
    y = _centred(delta).to_numpy(dtype=float).ravel()
    cols = [
        _centred(feats[n].reindex(index=delta.index, columns=delta.columns)).to_numpy(float).ravel()
        for n in names
    ]
    x = np.column_stack(cols) if cols else np.zeros((len(y), 0))
    ok = ~np.isnan(y) & ~np.isnan(x).any(axis=1)
    return x[ok], y[ok]


def _regression_row(
    delta: pd.DataFrame,
    known: Mapping[str, pd.DataFrame],
    new: Mapping[str, Mapping[str, float]],
    names: Sequence[str],
    alpha: float,
) -> pd.Series:
    """mean_t Δ + Σ_k b_k (x_k(new, t) − mean_t x_k), b fitted over the measured cells (ridge with `alpha`
    on features scaled to unit sd, so the penalty does not depend on a feature's units; 0 = least
    squares). Features with no value for the new source, or constant over the cells, are left out."""
    from sklearn.linear_model import Ridge

    mean = delta.mean(axis=0)
    names = [n for n in names if n in known and any(np.isfinite(v) for v in new.get(n, {}).values())]
    x, y = _cell_design(known, names, delta)
    sd = x.std(axis=0) if len(y) else np.zeros(len(names))
    keep = sd > 0
    names, x, sd = [n for n, k in zip(names, keep, strict=True) if k], x[:, keep], sd[keep]
    if not names or len(y) < len(names) + 2 or np.ptp(y) == 0:
        return mean
    fit = Ridge(alpha=alpha, fit_intercept=False).fit(x / sd, y)
    pred = mean.copy()
    for b, n in zip(fit.coef_ / sd, names, strict=True):
        col_mean = known[n].reindex(index=delta.index, columns=delta.columns).mean(axis=0)
        x_new = pd.Series(new[n], dtype=float).reindex(delta.columns)
        pred = pred + b * (x_new - col_mean).fillna(0.0)
    return pred


@dataclass
class Study:
    """The measured side of a finished transfer study, as prediction needs it.

    delta: sources × targets; q: the paired test's q-values of those cells (same shape; NaN = untested);
    features: {source: SourceFeatures} for every measured source."""

    delta: pd.DataFrame
    q: pd.DataFrame
    features: dict[str, SourceFeatures]

    def __post_init__(self) -> None:
        if len(self.delta.index) < 2:
            raise SpilloverError(
                f"prediction needs a transfer study with at least 2 measured sources; it has {len(self.delta.index)}"
            )
        missing = [s for s in self.delta.index if s not in self.features]
        if missing:
            raise SpilloverError(f"no features for measured source(s) {', '.join(missing)}")

    def cell_features(self, sources: Sequence[str]) -> dict[str, pd.DataFrame]:
        """{feature: sources × targets} of the listed measured sources."""
        names = sorted({n for s in sources for n in self.features[s].to_targets})
        return {
            n: pd.DataFrame(
                [
                    [self.features[s].to_targets.get(n, {}).get(t, np.nan) for t in self.delta.columns]
                    for s in sources
                ],
                index=list(sources),
                columns=self.delta.columns,
                dtype=float,
            )
            for n in names
        }


def predict_row(
    study: Study, new: SourceFeatures, method: str, exclude: str | None = None, alpha: float = 1.0
) -> pd.Series:
    """The predicted Δ row of a source described by `new`, from the study's measured sources except
    `exclude` (LOSO). `new.to_sources` may name `exclude`; it is ignored."""
    if method not in METHODS:
        raise SpilloverError(f"unknown prediction method '{method}'; known: {', '.join(METHODS)}")
    sources = [s for s in study.delta.index if s != exclude]
    delta = study.delta.loc[sources]
    if method == MEAN_ROW:
        return delta.mean(axis=0)
    if method == TASK_TYPE:
        same = [
            s for s in sources if new.task_type is not None and study.features[s].task_type == new.task_type
        ]
        return delta.loc[same].mean(axis=0) if same else delta.mean(axis=0)
    if method in (SEMANTIC, STATS):
        sims = (
            new.to_sources
            if method == STATS
            else {k: v for k, v in new.to_sources.items() if k == "semantic_cosine"}
        )
        return _weighted_row(delta, _kernel_weights(sims, sources))
    known = study.cell_features(sources)
    if method in (GRADIENT, PROBE):
        feature = GRADIENT_FEATURE if method == GRADIENT else PROBE_FEATURE
        return _regression_row(delta, known, new.to_targets, [feature], alpha=0.0)
    # combined: every cell feature. (Not the stats kernel's prediction: for a measured source it is the
    # weighted mean of the *other* rows, which, centred per target, falls as the source's own Δ rises —
    # a feature correlated with the answer by construction.)
    return _regression_row(delta, known, new.to_targets, sorted(known), alpha=alpha)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ok = ~np.isnan(a) & ~np.isnan(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    return float(sps.spearmanr(a[ok], b[ok]).statistic)


def loso_predictions(study: Study, methods: Sequence[str] = METHODS) -> dict[str, pd.DataFrame]:
    """{method: sources × targets}: each measured source's row predicted from the other sources."""
    return {
        m: pd.DataFrame(
            {s: predict_row(study, study.features[s], m, exclude=s) for s in study.delta.index}
        ).T.reindex(index=study.delta.index, columns=study.delta.columns)
        for m in methods
    }


def evaluate_loso(study: Study, methods: Sequence[str] = METHODS, alpha: float = 0.05) -> pd.DataFrame:
    """One row per method: `method, spearman, sign_accuracy, regret, cost_fraction, n_sources`.

    spearman: mean over held-out sources of Spearman ρ(predicted row, measured row) across targets (sources
    whose rows are constant on either side are skipped). sign_accuracy: share of the cells with q < `alpha`
    whose predicted sign matches the measured one (NaN without such cells). regret: mean over targets of
    (best measured Δ on the target) − (measured Δ of the source the prediction ranks first). cost_fraction:
    mean over sources of the method's signal seconds / the source's fine-tune seconds (0 for methods that
    need only the study's own tables; NaN when a training time is unknown)."""
    preds = loso_predictions(study, methods)
    measured = study.delta.to_numpy(dtype=float)
    significant = (study.q.reindex_like(study.delta).to_numpy(dtype=float) < alpha) & ~np.isnan(measured)
    rows = []
    for m, frame in preds.items():
        p = frame.to_numpy(dtype=float)
        rhos = [_spearman(p[i], measured[i]) for i in range(len(p))]
        rho = float(np.nanmean(rhos)) if not np.isnan(rhos).all() else float("nan")
        cells = significant & ~np.isnan(p)
        sign = float((np.sign(p[cells]) == np.sign(measured[cells])).mean()) if cells.any() else float("nan")
        regrets = []
        for j in range(measured.shape[1]):
            col, guess = measured[:, j], p[:, j]
            if np.isnan(col).all() or np.isnan(guess).all():
                continue
            regrets.append(np.nanmax(col) - col[int(np.nanargmax(guess))])
        rows.append(
            {
                "method": m,
                "spearman": rho,
                "sign_accuracy": sign,
                "regret": float(np.nanmean(regrets)) if regrets else float("nan"),
                "cost_fraction": _cost_fraction(study, m),
                "n_sources": int(np.sum(~np.isnan(rhos))),
            }
        )
    return pd.DataFrame(
        rows, columns=["method", "spearman", "sign_accuracy", "regret", "cost_fraction", "n_sources"]
    )


SIGNALS: dict[str, tuple[str, ...]] = {
    STATS: ("stats",),
    SEMANTIC: ("stats",),
    GRADIENT: ("gradient",),
    PROBE: ("probe",),
    COMBINED: ("stats", "gradient", "probe"),
    TASK_TYPE: (),
    MEAN_ROW: (),
}


def _cost_fraction(study: Study, method: str) -> float:
    signals = SIGNALS[method]
    if not signals:
        return 0.0
    fractions = []
    for f in study.features.values():
        if not f.train_seconds:
            return float("nan")
        fractions.append(sum(f.cost_seconds.get(s, 0.0) for s in signals) / f.train_seconds)
    return float(np.mean(fractions))


def residual_halfwidth(study: Study, method: str, coverage: float = 0.95) -> float:
    """The `coverage` quantile of |LOSO residual| of `method` over the study's measured cells (NaN with
    fewer than 2 sources' residuals)."""
    pred = loso_predictions(study, [method])[method].to_numpy(dtype=float)
    res = np.abs(pred - study.delta.to_numpy(dtype=float)).ravel()
    res = res[~np.isnan(res)]
    return float(np.quantile(res, coverage)) if len(res) >= 2 else float("nan")


def predicted_table(
    study: Study, source: str, new: SourceFeatures, method: str = COMBINED, coverage: float = 0.95
) -> pd.DataFrame:
    """`source, target, predicted_delta, low, high` for a new source (not one of the measured rows)."""
    row = predict_row(study, new, method)
    half = residual_halfwidth(study, method, coverage)
    return pd.DataFrame(
        {
            "source": source,
            "target": row.index,
            "predicted_delta": row.to_numpy(dtype=float),
            "low": row.to_numpy(dtype=float) - half,
            "high": row.to_numpy(dtype=float) + half,
        }
    )
