"""Per-task score as a function of the mixture ratios (RegMix-style; issue 26 item 3): fitted on a mixture
study's finished mixtures, checked by leaving one mixture out, and used to propose ratios.

RegMix fits a regression over hundreds of small proxy runs; a mixture study has a handful of runs, so the
model here is small on purpose: per task, a ridge regression (scikit-learn, standardised features) of
the final score on each task's mean ratio r and log(r + 0.01) — the log term lets a task's score rise
steeply from a zero share and flatten (the shape the reference mixture study measured, docs/findings.md).
A scheduled mixture enters with its run-average ratios, which is an approximation: the reference study
measured a schedule scoring differently from the fixed ratio with the same average (docs/findings.md).

- `leave_one_mixture_out`: each mixture's final scores predicted from the other mixtures.
- `loo_summary`: per task, Spearman ρ between predicted and measured scores over the held-out mixtures,
  and the mean absolute error.
- `recommend`: a grid over the ratio simplex, inside the measured range of each task's ratio; predicted
  scores; the ratios maximising the mean predicted score with no task more than `epsilon` below the base
  model (methods.md §5's trade-off as an objective).
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import stats as sps

LOG_FLOOR = 0.01  # log(r + 0.01): finite at r = 0
MIN_MIXTURES = 3  # a fit needs ≥ 2 other mixtures; a rank correlation ≥ 3 held-out ones


def _features(ratios: pd.DataFrame) -> np.ndarray:
    r = ratios.to_numpy(dtype=float)
    return np.hstack([r, np.log(r + LOG_FLOOR)])


def _fit_predict(ratios: pd.DataFrame, scores: pd.DataFrame, new: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Predicted scores (new mixtures × tasks) from a per-task ridge fit on (ratios, scores)."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, x_new = _features(ratios), _features(new[ratios.columns])
    out = {}
    for task in scores.columns:
        y = scores[task].to_numpy(dtype=float)
        ok = ~np.isnan(y)
        if ok.sum() < 2 or np.ptp(y[ok]) == 0:
            out[task] = np.full(len(new), np.nanmean(y) if ok.any() else np.nan)
            continue
        model = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(x[ok], y[ok])
        out[task] = model.predict(x_new)
    return pd.DataFrame(out, index=new.index)


def leave_one_mixture_out(
    ratios: pd.DataFrame, scores: pd.DataFrame, alpha: float = 1.0, fit_scores: pd.DataFrame | None = None
) -> pd.DataFrame:
    """`mixture, task, measured, predicted`: each mixture's final score on each task predicted from the
    other mixtures (ratios: mixture × task mean ratios; scores: mixture × task final scores).

    `fit_scores` (default `scores`): what the regression is fitted on, e.g. each mixture's score at an
    early probe step — a short proxy run, RegMix's idea — to ask whether short runs rank held-out mixtures
    as their full runs do. Their scale differs from the final scores, so read the rank correlation of such
    a fit, not its absolute error."""
    fit = scores if fit_scores is None else fit_scores
    rows = []
    for m in ratios.index:
        rest = [o for o in ratios.index if o != m]
        pred = _fit_predict(ratios.loc[rest], fit.loc[rest, scores.columns], ratios.loc[[m]], alpha)
        for task in scores.columns:
            rows.append(
                {"mixture": m, "task": task, "measured": scores.at[m, task], "predicted": pred.at[m, task]}
            )
    return pd.DataFrame(rows, columns=["mixture", "task", "measured", "predicted"])


def loo_summary(loo: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Per task (within each group of the `by` columns, e.g. `fit_on`): `spearman` (ρ of predicted vs
    measured over held-out mixtures; NaN when either side is constant or fewer than 3), `mae`,
    `n_mixtures`."""
    by = list(by or [])
    rows = []
    for key, part in loo.groupby([*by, "task"], sort=False):
        *group, task = key
        ok = part.dropna(subset=["measured", "predicted"])
        m, p = ok["measured"].to_numpy(float), ok["predicted"].to_numpy(float)
        rho = (
            float(sps.spearmanr(m, p).statistic)
            if len(ok) >= MIN_MIXTURES and np.ptp(m) > 0 and np.ptp(p) > 0
            else float("nan")
        )
        rows.append(
            dict(zip(by, group, strict=True))
            | {"task": task, "spearman": rho, "mae": float(np.abs(m - p).mean()), "n_mixtures": len(ok)}
        )
    return pd.DataFrame(rows, columns=[*by, "task", "spearman", "mae", "n_mixtures"])


def simplex_grid(tasks: list[str], step: float) -> pd.DataFrame:
    """Every ratio vector over `tasks` with components on multiples of `step`, summing to 1."""
    n = round(1 / step)
    if abs(n * step - 1) > 1e-9:
        raise ValueError(f"grid step {step} does not divide 1")
    rows = [c for c in itertools.product(range(n + 1), repeat=len(tasks) - 1) if sum(c) <= n]
    grid = np.array([[*c, n - sum(c)] for c in rows], dtype=float) / n
    return pd.DataFrame(grid, columns=tasks)


def recommend(
    ratios: pd.DataFrame,
    scores: pd.DataFrame,
    base: pd.Series,
    epsilon: float = 0.02,
    step: float = 0.05,
    top: int = 5,
    alpha: float = 1.0,
) -> pd.DataFrame:
    """The `top` ratio vectors of the grid by mean predicted score among those whose every task is
    predicted ≥ base − `epsilon` (`feasible`); when none is feasible, the best by mean with feasible = False.
    Only vectors inside the measured range of every task's ratio are searched (a handful of runs says
    nothing about a share below the smallest or above the largest one measured). Columns: `ratio/<task>`,
    `predicted/<task>`, `mean`, `feasible`; empty when the grid has no vector inside the range."""
    grid = simplex_grid(list(ratios.columns), step)
    low, high = ratios.min(axis=0).to_numpy(), ratios.max(axis=0).to_numpy()
    inside = ((grid.to_numpy() >= low - 1e-9) & (grid.to_numpy() <= high + 1e-9)).all(axis=1)
    grid = grid[inside].reset_index(drop=True)
    pred = _fit_predict(ratios, scores, grid, alpha)
    floor = base.reindex(scores.columns) - epsilon
    feasible = (pred >= floor.to_numpy()).all(axis=1)
    table = pd.concat([grid.add_prefix("ratio/"), pred.add_prefix("predicted/")], axis=1)
    table["mean"], table["feasible"] = pred.mean(axis=1), feasible
    pool = table[table["feasible"]] if feasible.any() else table
    return pool.sort_values("mean", ascending=False, kind="stable").head(top).reset_index(drop=True)
