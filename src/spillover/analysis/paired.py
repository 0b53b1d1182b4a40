"""Paired inference: every reported difference as a paired interval, a paired test and a BH q-value.

Two models scored on the SAME test rows are compared row by row (architecture principle 8, issue 24):

- `paired_difference`: per-row scores a, b (n,) → diff = mean(a) − mean(b), a percentile bootstrap CI
  that resamples rows jointly (scipy.stats.bootstrap, paired=True), and p from the exact McNemar test
  (binomial test on the discordant rows) for 0/1 scores, or a paired sign-flip permutation test otherwise.
- `paired_difference_stat`: the same for metrics that are not means of per-row values (macro-F1,
  balanced accuracy): a statistic of (predictions, gold); p by swapping the two models' predictions per row.
- `hierarchical_difference`: training-seed replicates; CI by resampling seeds, then rows.
- `bh_qvalues`, `comparisons_table`, `delta_stats_table`: Benjamini–Hochberg q within a table and the two
  table layouts the studies write.
- `pca_null`: permutation null for the PCA explained-variance ratios of a Δ matrix.
- `row_bootstrap`: intervals that resample whole matrix rows (sources) instead of correlated cells.
- `mde_paired_proportion`, `mde_paired_mean`: minimum detectable effects (normal approximation).

All functions are pure and seeded; NaN pairs are dropped (n counts the pairs used).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats as sps

from spillover.analysis.traits import TransferPCA

log = logging.getLogger(__name__)

MetricKind = Literal["binary", "continuous"]
NAN = float("nan")
COMPARISON_COLUMNS = ["a", "b", "target", "metric", "diff", "ci_low", "ci_high", "p", "q", "significant"]
COMPARISON_COLUMNS += ["n", "seeds"]
DELTA_STATS_COLUMNS = ["source", "target", "metric", "delta", "ci_low", "ci_high", "p", "q", "significant"]
DELTA_STATS_COLUMNS += ["n", "seeds"]
_CHUNK = 2_000_000  # elements per resampling block (~16 MB of float64)


@dataclass(frozen=True)
class PairedResult:
    """One paired comparison. `test` is "mcnemar", "permutation" or "sign_flip" ("" when n = 0).

    `seed_sd` is the standard deviation (ddof=1) of the per-seed differences; NaN with one seed.
    """

    diff: float
    ci_low: float
    ci_high: float
    p: float
    n: int
    seeds: int = 1
    seed_sd: float = NAN
    test: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _empty(seeds: int = 1) -> PairedResult:
    return PairedResult(NAN, NAN, NAN, NAN, 0, seeds)


# ------------------------------------------------------------------------------------------ inputs


def _paired(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """a, b as float (n,) arrays of one length, pairs with a NaN on either side dropped."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(
            f"paired scores need two 1-D arrays of one length, got shapes {x.shape} and {y.shape}"
        )
    keep = ~(np.isnan(x) | np.isnan(y))
    if not keep.all():
        log.info("paired comparison: %d row(s) with a missing score left out", int((~keep).sum()))
    return x[keep], y[keep]


def _check_kind(kind: str, *scores: np.ndarray) -> None:
    if kind not in ("binary", "continuous"):
        raise ValueError(f"metric_kind must be 'binary' or 'continuous', got {kind!r}")
    if kind == "binary" and not all(np.isin(s[~np.isnan(s)], (0.0, 1.0)).all() for s in scores):
        raise ValueError("metric_kind='binary' needs per-row 0/1 scores (correctness); use 'continuous'")


def metric_kind_of(*scores: Sequence[float]) -> MetricKind:
    """'binary' when every non-NaN per-row score is 0 or 1 (accuracy-type), else 'continuous'."""
    values = [np.asarray(s, dtype=float) for s in scores]
    return "binary" if all(np.isin(v[~np.isnan(v)], (0.0, 1.0)).all() for v in values) else "continuous"


# ------------------------------------------------------------------------------------------ tests


def mcnemar_p(a: np.ndarray, b: np.ndarray) -> float:
    """Exact two-sided McNemar p for 0/1 scores a, b (n,): binomial test of n10 among n10 + n01 at 1/2.

    n10 = rows a gets right and b wrong, n01 the reverse; concordant rows carry no information. 1.0 when
    there is no discordant row.
    """
    n10, n01 = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    return 1.0 if n10 + n01 == 0 else float(sps.binomtest(n10, n10 + n01, 0.5).pvalue)


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return x.mean(axis=axis)


def sign_flip_p(d: np.ndarray, n_perm: int, seed: int) -> float:
    """Two-sided paired permutation p of mean(d) = 0, d: (n,) per-row differences.

    Each row's sign is flipped at random (= swapping the two models' scores on that row); exact
    enumeration when 2^n <= n_perm (scipy.stats.permutation_test, permutation_type="samples").
    """
    if not np.any(d != 0):
        return 1.0
    batch = max(1, _CHUNK // len(d))
    res = sps.permutation_test(
        (d,), _mean, permutation_type="samples", n_resamples=n_perm, batch=batch, rng=seed
    )
    return float(res.pvalue)


def _percentiles(values: np.ndarray, alpha: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return NAN, NAN
    low, high = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


# ------------------------------------------------------------------------------------------ paired


def _mean_diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return x.mean(axis=axis) - y.mean(axis=axis)


def paired_ci(a: np.ndarray, b: np.ndarray, *, n_boot: int, seed: int, alpha: float) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(a) − mean(b), rows resampled jointly; a, b: (n,) without NaN.

    When every row has the same difference, every resample does too and the CI is that value.
    """
    d = a - b
    if len(d) == 0:
        return NAN, NAN
    if np.ptp(d) == 0:
        return float(d[0]), float(d[0])
    res = sps.bootstrap(
        (a, b),
        _mean_diff,
        paired=True,
        n_resamples=n_boot,
        batch=max(1, _CHUNK // len(d)),
        confidence_level=1 - alpha,
        method="percentile",
        rng=seed,
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    *,
    metric_kind: MetricKind,
    n_boot: int,
    seed: int,
    alpha: float = 0.05,
    n_perm: int = 9999,
) -> PairedResult:
    """Paired comparison of two models' per-row scores on the same test rows.

    a, b: (n,) per-row scores, row i of a and row i of b from the same test example. diff = mean(a) −
    mean(b); CI: percentile bootstrap (`n_boot` resamples of rows, jointly for a and b); p: exact McNemar
    for metric_kind="binary" (0/1 correctness), paired sign-flip permutation (`n_perm` resamples) for
    "continuous". Pairs with a NaN are dropped; n = pairs used (all-NaN result when none is left).
    """
    x, y = _paired(a, b)
    _check_kind(metric_kind, x, y)
    if len(x) == 0:
        return _empty()
    low, high = paired_ci(x, y, n_boot=n_boot, seed=seed, alpha=alpha)
    if metric_kind == "binary":
        p, test = mcnemar_p(x, y), "mcnemar"
    else:
        p, test = sign_flip_p(x - y, n_perm, seed), "permutation"
    return PairedResult(float(x.mean() - y.mean()), low, high, p, len(x), test=test)


def paired_difference_stat(
    pred_a: Sequence[Any],
    pred_b: Sequence[Any],
    gold: Sequence[Any],
    statistic: Callable[[np.ndarray, np.ndarray], float],
    *,
    n_boot: int,
    seed: int,
    alpha: float = 0.05,
    n_perm: int = 9999,
) -> PairedResult:
    """Paired comparison for a metric computed from whole prediction vectors (macro-F1, balanced accuracy).

    pred_a, pred_b, gold: (n,) labels (any dtype) of the same test rows; statistic(pred, gold) -> float,
    called on subsets and resamples of rows. diff = statistic(pred_a, gold) − statistic(pred_b, gold).
    CI: percentile bootstrap over resampled row indices, the same rows for both models. p: paired
    permutation that swaps the two models' predictions on a random subset of rows (scipy
    permutation_test, permutation_type="samples"). The statistic runs in Python per resample, so the cost
    is about 2·(n_boot + n_perm) calls. Resamples where the statistic is NaN are left out of the CI.
    """
    pa, pb, g = np.asarray(pred_a), np.asarray(pred_b), np.asarray(gold)
    if pa.ndim != 1 or not pa.shape == pb.shape == g.shape:
        raise ValueError(f"predictions and gold need one length, got {pa.shape}, {pb.shape}, {g.shape}")
    n = len(pa)
    if n == 0:
        return _empty()
    diff = float(statistic(pa, g) - statistic(pb, g))
    if np.array_equal(pa, pb):
        return PairedResult(diff, diff, diff, 1.0, n, test="permutation")
    boot = _index_bootstrap(lambda i: statistic(pa[i], g[i]) - statistic(pb[i], g[i]), n, n_boot, seed)
    low, high = _percentiles(boot, alpha)
    res = sps.permutation_test(
        (pa, pb),
        lambda x, y: statistic(x, g) - statistic(y, g),
        permutation_type="samples",
        vectorized=False,
        n_resamples=n_perm,
        rng=seed,
    )
    return PairedResult(diff, low, high, float(res.pvalue), n, test="permutation")


def _index_bootstrap(fn: Callable[[np.ndarray], float], n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot,) values of fn(row indices) over resamples of range(n) (scipy.stats.bootstrap's resampling)."""
    res = sps.bootstrap(
        (np.arange(n),),
        lambda idx: fn(np.asarray(idx, dtype=np.intp)),
        vectorized=False,
        n_resamples=n_boot,
        method="percentile",
        rng=seed,
    )
    return np.asarray(res.bootstrap_distribution, dtype=float)


# ------------------------------------------------------------------------------------------ replicates


def _seed_matrix(per_seed_a: Sequence[Sequence[float]], per_seed_b: Sequence[Sequence[float]]) -> np.ndarray:
    """(k, n) per-seed per-row differences; a single entry on one side is shared by every seed of the other.

    Rows with a NaN in any seed are dropped.
    """
    message = "replicates need per-seed score arrays on the same rows, equal seed counts or one shared entry"
    try:
        xa = np.atleast_2d(np.asarray(per_seed_a, dtype=float))
        xb = np.atleast_2d(np.asarray(per_seed_b, dtype=float))
    except ValueError as err:  # ragged: seeds scored on different numbers of rows
        raise ValueError(f"{message}; got arrays of different lengths") from err
    ka, kb = xa.shape[0], xb.shape[0]
    if xa.ndim != 2 or xa.shape[1] != xb.shape[1] or not (ka == kb or 1 in (ka, kb)):
        raise ValueError(f"{message}; got shapes {xa.shape} and {xb.shape}")
    d = xa - xb
    keep = ~np.isnan(d).any(axis=0)
    if not keep.all():
        log.info("hierarchical comparison: %d row(s) with a missing score left out", int((~keep).sum()))
    return d[:, keep]


def hierarchical_ci(d: np.ndarray, *, n_boot: int, seed: int, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile CI of the mean of d: (k seeds, n rows) by a two-stage bootstrap.

    Each replicate draws k seeds with replacement, then n rows with replacement (the same rows for every
    seed, since all seeds are scored on the same rows), and averages d over the drawn seeds × rows. Seed
    counts ws (n_boot, k) and row counts wr (n_boot, n) make this ws · d · wrᵀ / (k·n).
    """
    k, n = d.shape
    if n == 0:
        return NAN, NAN
    rng = np.random.default_rng(seed)
    ws = rng.multinomial(k, np.full(k, 1 / k), size=n_boot)
    boot = np.empty(n_boot)
    step = max(1, _CHUNK // n)
    for start in range(0, n_boot, step):
        stop = min(n_boot, start + step)
        wr = rng.multinomial(n, np.full(n, 1 / n), size=stop - start)
        boot[start:stop] = ((ws[start:stop] @ d) * wr).sum(axis=1) / (k * n)
    return _percentiles(boot, alpha)


def hierarchical_difference(
    per_seed_a: Sequence[Sequence[float]],
    per_seed_b: Sequence[Sequence[float]],
    *,
    metric_kind: MetricKind,
    n_boot: int,
    seed: int,
    alpha: float = 0.05,
    n_perm: int = 9999,
) -> PairedResult:
    """Difference of two models averaged over training seeds, on the same test rows.

    per_seed_a, per_seed_b: lists of (n,) per-row scores, one entry per training seed. Equal lengths pair
    seed s of a with seed s of b; a single entry on one side (e.g. the untuned base) is compared with every
    seed of the other. diff = mean over seeds of (mean(a_s) − mean(b_s)); CI: `hierarchical_ci` (seeds,
    then rows), so seed-to-seed variance is inside the interval; p: sign-flip permutation of the
    seed-averaged per-row differences (this tests "no difference on these rows, averaged over these
    seeds"; the seed variance is in the CI, not in p); seed_sd: sd (ddof=1) of the per-seed differences.
    With one seed on both sides this is `paired_difference` (exact McNemar for binary scores).
    """
    d = _seed_matrix(per_seed_a, per_seed_b)
    if d.shape[0] == 1:
        a, b = np.asarray(per_seed_a, dtype=float), np.asarray(per_seed_b, dtype=float)
        return paired_difference(
            a.reshape(-1),
            b.reshape(-1),
            metric_kind=metric_kind,
            n_boot=n_boot,
            seed=seed,
            alpha=alpha,
            n_perm=n_perm,
        )
    _check_kind(metric_kind, *np.asarray(per_seed_a, dtype=float), *np.asarray(per_seed_b, dtype=float))
    k, n = d.shape
    if n == 0:
        return _empty(k)
    low, high = hierarchical_ci(d, n_boot=n_boot, seed=seed, alpha=alpha)
    p = sign_flip_p(d.mean(axis=0), n_perm, seed)
    spread = float(d.mean(axis=1).std(ddof=1))
    return PairedResult(float(d.mean()), low, high, p, n, seeds=k, seed_sd=spread, test="sign_flip")


# ------------------------------------------------------------------------------------------ tables


def bh_qvalues(pvalues: Sequence[float]) -> np.ndarray:
    """Benjamini–Hochberg q-values (n,) for p-values (n,); NaN p stays NaN and does not count in m.

    q_(i) = min over j >= i of p_(j) · m / j (sorted ascending, capped at 1), via
    scipy.stats.false_discovery_control(method="bh").
    """
    p = np.asarray(pvalues, dtype=float).reshape(-1)
    ok = ~np.isnan(p)
    if ((p[ok] < 0) | (p[ok] > 1)).any():
        raise ValueError(f"p-values must lie in [0, 1], got {p[ok][(p[ok] < 0) | (p[ok] > 1)][:3]}")
    q = np.full(p.shape, NAN)
    if ok.any():
        q[ok] = sps.false_discovery_control(p[ok], method="bh")
    return q


def _stats_table(
    rows: Iterable[Mapping[str, Any]],
    columns: list[str],
    diff_name: str,
    by: Sequence[str] | None,
    level: float,
) -> pd.DataFrame:
    frame = pd.DataFrame([dict(r) for r in rows])
    if frame.empty:
        return pd.DataFrame(columns=columns)
    if diff_name not in frame and "diff" in frame:
        frame = frame.rename(columns={"diff": diff_name})
    if "seeds" not in frame:
        frame["seeds"] = 1
    missing = [c for c in columns if c not in frame and c not in ("q", "significant")]
    if missing:
        raise ValueError(f"comparison rows lack column(s) {', '.join(missing)}")
    if by:
        frame["q"] = frame.groupby(list(by), sort=False)["p"].transform(lambda p: bh_qvalues(p.to_numpy()))
    else:
        frame["q"] = bh_qvalues(frame["p"].to_numpy())
    frame["significant"] = (frame["q"] < level).to_numpy(dtype=bool)
    frame[["n", "seeds"]] = frame[["n", "seeds"]].astype(int)
    return frame[columns].reset_index(drop=True)


def comparisons_table(
    rows: Iterable[Mapping[str, Any]], *, by: Sequence[str] | None = None, level: float = 0.05
) -> pd.DataFrame:
    """`tables/comparisons.csv`: a, b, target, metric, diff, ci_low, ci_high, p, q, significant, n, seeds.

    rows: one mapping per comparison with a, b, target, metric and a result's fields, e.g.
    `{"a": "talr", "b": "base", "target": "sst2", "metric": "accuracy", **result.as_dict()}` (extra keys
    are dropped; seeds defaults to 1). q: Benjamini–Hochberg over the whole table (or within each group of
    the `by` columns); significant = q < `level`.
    """
    return _stats_table(rows, COMPARISON_COLUMNS, "diff", by, level)


def delta_stats_table(
    rows: Iterable[Mapping[str, Any]], *, by: Sequence[str] | None = None, level: float = 0.05
) -> pd.DataFrame:
    """`tables/delta_stats.csv`: source, target, metric, delta, ci_low, ci_high, p, q, significant, n, seeds.

    rows as in `comparisons_table`, keyed by source instead of a/b; a result's `diff` becomes `delta`.
    """
    return _stats_table(rows, DELTA_STATS_COLUMNS, "delta", by, level)


# ------------------------------------------------------------------------------------------ nulls


def _variance_ratios(z: np.ndarray) -> np.ndarray:
    """(..., min(I, N)) explained-variance ratios S² / ΣS² of centred matrices z: (..., I, N); 0 if no variance."""
    s2 = np.linalg.svd(z, compute_uv=False) ** 2
    total = s2.sum(axis=-1, keepdims=True)
    return np.divide(s2, total, out=np.zeros_like(s2), where=total > 0)


def pca_null(
    delta: pd.DataFrame,
    n_perm: int = 1000,
    seed: int = 0,
    *,
    standardize: bool = False,
    n_components: int | None = None,
    quantile: float = 0.95,
) -> pd.DataFrame:
    """Permutation null for `TransferPCA` explained-variance ratios of `delta` (I models × N targets).

    Each column is shuffled independently `n_perm` times (breaking the row structure, keeping every
    column's values) and the PCA is refitted. Shuffling inside a column keeps its mean and sd, so the
    centring / scaling (and NaN → column mean) of the observed fit is exactly what a refit would use.
    Columns: component (PC1…), explained (observed ratio), null_p95 (the `quantile` of that component's
    ratio under the null), p (the permutation p-value of that component alone: (1 + #null ratios ≥
    explained) / (1 + n_perm)), above_null: explained > null_p95 for this component and every earlier one
    (a later component counts only once the ones before it are above noise).
    """
    pca = TransferPCA(n_components=n_components, standardize=standardize).fit(delta)
    mean, scale = pca.mean_.to_numpy(), pca.scale_.to_numpy()
    x = delta.to_numpy(dtype=float)
    z = (np.where(np.isnan(x), mean, x) - mean) / scale
    k = pca.n_components_
    rng = np.random.default_rng(seed)
    null = np.empty((n_perm, k))
    step = max(1, _CHUNK // z.size)
    for start in range(0, n_perm, step):
        stop = min(n_perm, start + step)
        shuffled = rng.permuted(np.broadcast_to(z, (stop - start, *z.shape)), axis=1)
        null[start:stop] = _variance_ratios(shuffled)[:, :k]
    explained = np.asarray(pca.explained_variance_ratio_, dtype=float)
    p95 = np.quantile(null, quantile, axis=0) if n_perm else np.full(k, NAN)
    above = np.logical_and.accumulate(explained > p95)
    p = (1 + (null >= explained - 1e-12).sum(axis=0)) / (1 + n_perm)
    return pd.DataFrame(
        {
            "component": list(pca.loadings_.columns),
            "explained": explained,
            "null_p95": p95,
            "p": p,
            "above_null": above,
        }
    )


def row_bootstrap(
    fn: Callable[..., float],
    arrays: Sequence[np.ndarray],
    *,
    n_boot: int,
    seed: int,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile CI of fn(*arrays) when whole rows (e.g. sources of a Δ matrix) are resampled.

    arrays: matrices sharing their first axis, (I, ...) each (Δ, a similarity, a cell mask); every
    replicate draws I row indices with replacement and calls fn on every array indexed by the same rows,
    so a row's cells stay together (cells of one source are correlated, not independent draws). Replicates
    where fn is NaN/inf (e.g. constant input) are left out; (nan, nan) if none is left.
    """
    mats = [np.asarray(a) for a in arrays]
    if not mats or len({m.shape[0] for m in mats}) != 1:
        raise ValueError(f"row_bootstrap needs arrays with one row count, got {[m.shape for m in mats]}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, mats[0].shape[0], size=(n_boot, mats[0].shape[0]))
    boot = np.array([fn(*(m[i] for m in mats)) for i in idx], dtype=float)
    return _percentiles(boot, alpha)


# ------------------------------------------------------------------------------------------ power


def _z(alpha: float, power: float) -> tuple[float, float]:
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha and power must lie in (0, 1), got alpha={alpha}, power={power}")
    return float(sps.norm.ppf(1 - alpha / 2)), float(sps.norm.ppf(power))


def mde_paired_mean(n: int, sd_diff: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest |mean difference| a two-sided paired test at `alpha` detects with probability `power`.

    Normal approximation: MDE = (z_{1−α/2} + z_power) · sd_diff / √n, sd_diff the sd of the per-row
    differences a_i − b_i. (n = 100, sd_diff = 0.3: 0.084.)
    """
    za, zb = _z(alpha, power)
    return (za + zb) * sd_diff / math.sqrt(n)


def mde_paired_proportion(n: int, p_discordant: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest accuracy difference δ = p10 − p01 McNemar's test detects (two-sided) with `power`.

    p_discordant ψ = p10 + p01, the share of rows where exactly one model is right. Connor's (1987)
    normal approximation √n·δ = z_{1−α/2}·√ψ + z_power·√(ψ − δ²) solved for δ:
    δ = √ψ · (√n·z_α + z_β·√(n − z_α² + z_β²)) / (n + z_β²). inf when δ would exceed ψ (no effect the
    discordance allows is detectable). power >= 0.5. (n = 300, ψ = 0.2: about 0.072.)
    """
    za, zb = _z(alpha, power)
    if power < 0.5 or not 0 < p_discordant <= 1:
        raise ValueError(f"need power >= 0.5 and 0 < p_discordant <= 1, got {power}, {p_discordant}")
    if n <= za**2:
        return math.inf
    delta = math.sqrt(p_discordant) * (math.sqrt(n) * za + zb * math.sqrt(n - za**2 + zb**2)) / (n + zb**2)
    return delta if delta <= p_discordant else math.inf
