"""Attribution (methods §1.4): relate transfer Δ_ij to source–target similarities.

- `spearman_ci`: Spearman's rho with a deterministic percentile bootstrap CI over (x, y) pairs.
- `attribute`: one rho / CI / p per similarity measure over the matrix cells (off-diagonal by default);
  the CI resamples sources (rows), not cells, since one source's cells are correlated.
- `anomalies`: an OLS of Δ on the similarity measures; cells ranked by |internally studentised residual|
  (r_i / (s·sqrt(1 − h_ii)), falling back to |r_i| when the fit leaves no degrees of freedom).
- `length_shift_table`: tuned-minus-base mean output length per cell, next to Δ.

Measures whose name ends in "distance" are read as "lower = more similar"; all others "higher = more
similar". Similarity frames are sources × targets, aligned to Δ by label (`similarity_frames` builds
them from `DatasetStats`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from spillover.analysis.paired import row_bootstrap
from spillover.analysis.transfer import BASE, diagonal_mask, score_matrix
from spillover.data.stats import DatasetStats, pair_similarities

log = logging.getLogger(__name__)
NAN4 = (float("nan"),) * 4


def _rank_rows(a: np.ndarray) -> np.ndarray:
    return sps.rankdata(a, axis=1)


def _row_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row pair; NaN where a row is constant."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)


def spearman_ci(
    x: Sequence[float], y: Sequence[float], n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float, float, float]:
    """(rho, ci_low, ci_high, p). Pairs with a NaN are dropped; all NaN with < 3 pairs or constant input.

    rho and p come from scipy.stats.spearmanr; the CI is the (alpha/2, 1 − alpha/2) percentile of rho
    over `n_boot` resamples of pairs (seeded; resamples where x or y is constant are skipped).
    """
    xv, yv = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = ~(np.isnan(xv) | np.isnan(yv))
    xv, yv = xv[keep], yv[keep]
    if len(xv) < 3 or np.ptp(xv) == 0 or np.ptp(yv) == 0:
        return NAN4
    res = sps.spearmanr(xv, yv)
    rho, p = float(res.statistic), float(res.pvalue)
    idx = np.random.default_rng(seed).integers(0, len(xv), size=(n_boot, len(xv)))
    boots = _row_corr(_rank_rows(xv[idx]), _rank_rows(yv[idx]))
    boots = boots[~np.isnan(boots)]
    if len(boots) == 0:
        return rho, float("nan"), float("nan"), p
    low, high = np.percentile(boots, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return rho, float(low), float(high), p


def _cells(delta: pd.DataFrame, include_diagonal: bool) -> np.ndarray:
    """(I, N) bool: cells used for attribution."""
    return np.ones(delta.shape, dtype=bool) if include_diagonal else ~diagonal_mask(delta)


def _aligned(delta: pd.DataFrame, sim: pd.DataFrame) -> np.ndarray:
    return sim.reindex(index=delta.index, columns=delta.columns).to_numpy(dtype=float)


def _spearman_cells(d: np.ndarray, s: np.ndarray, use: np.ndarray) -> float:
    """Spearman rho over the cells in `use` where Δ `d` and similarity `s` (I, N) are both known; NaN with
    fewer than 3 such cells or when either side is constant on them."""
    ok = use & ~np.isnan(d) & ~np.isnan(s)
    if ok.sum() < 3 or np.ptp(d[ok]) == 0 or np.ptp(s[ok]) == 0:
        return float("nan")
    return float(sps.spearmanr(d[ok], s[ok]).statistic)


def attribute(
    delta: pd.DataFrame,
    similarities: Mapping[str, pd.DataFrame],
    include_diagonal: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Spearman(Δ_ij, similarity_ij) per measure: columns rho, ci_low, ci_high, p, n_pairs, n_sources.

    rho and p (scipy.stats.spearmanr) over the cells used (off-diagonal by default). The CI resamples
    whole sources (rows of Δ with their similarity rows; `analysis.paired.row_bootstrap`): one source's
    cells share its training run and are not independent draws, so resampling cells would give intervals
    too narrow. p treats the cells as independent and is optimistic for the same reason; read the CI.
    n_sources: the rows with at least one usable cell.
    """
    use = _cells(delta, include_diagonal)
    d = delta.to_numpy(dtype=float)
    rows = {}
    for name, sim in similarities.items():
        s = _aligned(delta, sim)
        ok = use & ~np.isnan(d) & ~np.isnan(s)
        rho = _spearman_cells(d, s, use)
        p = float(sps.spearmanr(d[ok], s[ok]).pvalue) if np.isfinite(rho) else float("nan")
        low, high = (float("nan"),) * 2
        if np.isfinite(rho):
            low, high = row_bootstrap(_spearman_cells, [d, s, use], n_boot=n_boot, seed=seed, alpha=alpha)
        rows[name] = {"rho": rho, "ci_low": low, "ci_high": high, "p": p, "n_pairs": int(ok.sum())}
        rows[name]["n_sources"] = int(ok.any(axis=1).sum())
    columns = ["rho", "ci_low", "ci_high", "p", "n_pairs", "n_sources"]
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns).rename_axis("measure")


def _select_measures(d: np.ndarray, sims: dict[str, np.ndarray], use: np.ndarray) -> list[str]:
    """Drop the least-covered measure until the cells with every kept measure leave room for a fit."""
    base = use & ~np.isnan(d)
    names = [n for n, s in sims.items() if (base & ~np.isnan(s)).any()]
    while names:
        ok = base & np.logical_and.reduce([~np.isnan(sims[n]) for n in names])
        if ok.sum() >= len(names) + 2:
            return names
        names.remove(min(names, key=lambda n: (base & ~np.isnan(sims[n])).sum()))
    return names


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit y ~ 1 + x. Returns (standardised coefficients, predictions, studentised residuals)."""
    sd = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    design = np.column_stack([np.ones(len(y)), z])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    pred = design @ coef
    resid = y - pred
    dof = len(y) - np.linalg.matrix_rank(design)
    lev = np.einsum("ij,jk,ik->i", design, np.linalg.pinv(design.T @ design), design)
    s = np.sqrt((resid**2).sum() / dof) if dof > 0 else 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        stud = resid / (s * np.sqrt(np.clip(1 - lev, 0, None)))
    return coef[1:], pred, np.where(np.isfinite(stud), stud, np.nan)


def _similarity_rank(sim: pd.DataFrame, measure: str, source: str, target: str) -> tuple[int, int]:
    """(rank, n): where `source` stands among the sources on `target`, 1 = most similar; (0, n) if absent."""
    col = sim[target].dropna()
    if source not in col.index:
        return 0, len(col)
    order = col.sort_values(ascending=measure.endswith("distance"), kind="stable").index
    return list(order).index(source) + 1, len(col)


def _sentence(row: Mapping, measure: str | None, rank: int, n: int, scale: float) -> str:
    """ "sst2 → gsm8k: +4.8 points (similarity predicts +0.3) although it is the least similar source by …"."""
    head = f"{row['source']} → {row['target']}: {scale * row['delta']:+.1f} points"
    head += f" (similarity predicts {scale * row['predicted']:+.1f})"
    if measure is None or rank == 0 or n < 2:
        return head
    if rank == 1:
        where = f"the most similar source by {measure}"
    elif rank == n:
        where = f"the least similar source by {measure}"
    else:
        where = f"ranked {rank} of {n} sources by {measure}"
    surprising = (row["residual"] > 0) == (rank > n / 2)
    return f"{head} {'although' if surprising else 'and'} it is {where}"


def anomalies(
    delta: pd.DataFrame,
    similarities: Mapping[str, pd.DataFrame],
    top: int = 10,
    include_diagonal: bool = False,
    scale: float = 100.0,
) -> pd.DataFrame:
    """Cells whose Δ is furthest from an OLS prediction from the similarity measures.

    Columns: source, target, delta, predicted, residual, std_residual, note. `scale` converts scores to
    "points" in the note (100 for scores in [0, 1]). Measures missing on too many cells are left out
    (least covered first) until at least (#measures + 2) cells have every kept measure.
    """
    cols = ["source", "target", "delta", "predicted", "residual", "std_residual", "note"]
    use, d = _cells(delta, include_diagonal), delta.to_numpy(dtype=float)
    sims = {n: _aligned(delta, s) for n, s in similarities.items()}
    names = _select_measures(d, sims, use)
    if set(names) != set(sims):
        log.info("anomalies: measures left out for coverage: %s", ", ".join(sorted(set(sims) - set(names))))
    ok = use & ~np.isnan(d)
    for n in names:
        ok &= ~np.isnan(sims[n])
    if ok.sum() < 2:
        return pd.DataFrame(columns=cols)
    x = np.column_stack([sims[n][ok] for n in names]) if names else np.empty((int(ok.sum()), 0))
    coef, pred, stud = _ols(x, d[ok])
    ii, jj = np.nonzero(ok)
    key = np.where(np.isnan(stud), np.abs(d[ok] - pred), np.abs(stud))
    main = names[int(np.argmax(np.abs(coef)))] if names else None
    # rank sources only among the cells in use: the in-task source is trivially the most similar
    main_frame = pd.DataFrame(np.where(use, sims[main], np.nan), delta.index, delta.columns) if main else None
    rows = []
    for k in np.argsort(-key, kind="stable")[:top]:
        src, tgt = delta.index[ii[k]], delta.columns[jj[k]]
        row = {"source": src, "target": tgt, "delta": d[ok][k], "predicted": pred[k]}
        row.update(residual=d[ok][k] - pred[k], std_residual=stud[k])
        rank, n = _similarity_rank(main_frame, main, src, tgt) if main else (0, 0)
        rows.append({**row, "note": _sentence(row, main, rank, n, scale)})
    return pd.DataFrame(rows, columns=cols)


def length_shift_table(delta: pd.DataFrame, lengths: pd.DataFrame, base: str = BASE) -> pd.DataFrame:
    """Per cell: base and tuned mean output length, their difference, and Δ (for the scatter plot).

    lengths: long table (model, target, value) of mean generated length, base model included.
    """
    wide = score_matrix(lengths)
    base_len = wide.loc[base] if base in wide.index else pd.Series(np.nan, index=wide.columns)
    tuned = wide.reindex(index=delta.index, columns=delta.columns)
    rows = []
    for src in delta.index:
        for tgt in delta.columns:
            b, t = base_len.get(tgt, np.nan), tuned.at[src, tgt]
            rows.append({"source": src, "target": tgt, "base_length": b, "tuned_length": t})
            rows[-1].update(length_shift=t - b, delta=delta.at[src, tgt])
    return pd.DataFrame(
        rows, columns=["source", "target", "base_length", "tuned_length", "length_shift", "delta"]
    )


def similarity_frames(
    source_stats: Mapping[str, DatasetStats], target_stats: Mapping[str, DatasetStats]
) -> dict[str, pd.DataFrame]:
    """{measure: sources × targets DataFrame} from `pair_similarities`; None becomes NaN."""
    cells = {
        (s, t): pair_similarities(a, b) for s, a in source_stats.items() for t, b in target_stats.items()
    }
    measures = list(next(iter(cells.values()), {}))
    return {
        m: pd.DataFrame(
            [[cells[s, t][m] for t in target_stats] for s in source_stats],
            index=list(source_stats),
            columns=list(target_stats),
            dtype=float,
        )
        for m in measures
    }
