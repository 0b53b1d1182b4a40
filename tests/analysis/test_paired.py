"""Paired inference against hand-computed values, plus simulations under the null and at planted effects."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from spillover.analysis.attribution import spearman_ci
from spillover.analysis.paired import (
    COMPARISON_COLUMNS,
    DELTA_STATS_COLUMNS,
    bh_qvalues,
    comparisons_table,
    delta_stats_table,
    hierarchical_difference,
    mcnemar_p,
    mde_paired_mean,
    mde_paired_proportion,
    metric_kind_of,
    paired_difference,
    paired_difference_stat,
    pca_null,
    row_bootstrap,
    sign_flip_p,
)
from spillover.analysis.traits import TransferPCA

Z_A, Z_B = 1.959963984540054, 0.8416212335729143  # z_{0.975}, z_{0.8}


def _pairs(n10: int, n01: int, n11: int, n00: int) -> tuple[np.ndarray, np.ndarray]:
    """0/1 correctness of models a, b from the four cells of a McNemar table."""
    a = np.repeat([1.0, 0.0, 1.0, 0.0], [n10, n01, n11, n00])
    b = np.repeat([0.0, 1.0, 1.0, 0.0], [n10, n01, n11, n00])
    return a, b


def _accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float((pred == gold).mean())


def _balanced_accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    labels = np.unique(gold)
    return float(np.mean([(pred[gold == label] == label).mean() for label in labels]))


# ------------------------------------------------------------------------------------------ McNemar


def test_mcnemar_exact_by_hand():
    # 8 rows only a gets right, 1 only b: p = 2·P(Bin(9, 1/2) <= 1) = 2·(1 + 9)/512.
    a, b = _pairs(8, 1, 5, 6)
    res = paired_difference(a, b, metric_kind="binary", n_boot=500, seed=0)
    assert res.diff == pytest.approx((13 - 6) / 20)
    assert res.p == pytest.approx(20 / 512)
    assert res.p == pytest.approx(sps.binomtest(8, 9, 0.5).pvalue)
    assert (res.n, res.seeds, res.test) == (20, 1, "mcnemar")
    # 5 vs 1: 2·(1 + 6)/64; concordant rows change nothing; swapping the models keeps p.
    assert mcnemar_p(*_pairs(5, 1, 0, 0)) == pytest.approx(14 / 64)
    assert mcnemar_p(*_pairs(5, 1, 40, 30)) == pytest.approx(14 / 64)
    assert mcnemar_p(*_pairs(1, 5, 0, 0)) == pytest.approx(14 / 64)
    assert mcnemar_p(*_pairs(0, 0, 3, 4)) == 1.0


def test_binary_kind_refuses_non_binary_scores_and_kind_is_inferred():
    with pytest.raises(ValueError, match="0/1"):
        paired_difference([0.5, 1.0], [1.0, 0.0], metric_kind="binary", n_boot=10, seed=0)
    with pytest.raises(ValueError, match="metric_kind"):
        paired_difference([1.0], [0.0], metric_kind="accuracy", n_boot=10, seed=0)  # type: ignore[arg-type]
    assert metric_kind_of([1, 0, np.nan], [0, 0, 1]) == "binary"
    assert metric_kind_of([1, 0.5], [0, 0]) == "continuous"


# ------------------------------------------------------------------------------------------ paired


@pytest.mark.parametrize("kind", ["binary", "continuous"])
def test_identical_scores_give_zero_zero_interval_and_p_one(kind):
    a = np.array([1, 0, 1, 1, 0, 1, 0, 0], dtype=float)
    res = paired_difference(a, a.copy(), metric_kind=kind, n_boot=500, seed=3)
    assert (res.diff, res.ci_low, res.ci_high, res.p, res.n) == (0.0, 0.0, 0.0, 1.0, 8)


def test_constant_shift_interval_is_the_shift_and_p_is_exact():
    # d = 0.25 on all 9 rows: every resample has mean 0.25; of the 2^9 sign patterns only all-plus and
    # all-minus are as extreme, so the exact two-sided p = 2/512.
    b = np.tile([0.0, 0.5, 0.25], 3)
    res = paired_difference(b + 0.25, b, metric_kind="continuous", n_boot=500, seed=0)
    assert (res.diff, res.ci_low, res.ci_high) == (0.25, 0.25, 0.25)
    assert res.p == pytest.approx(2 / 512)
    assert res.test == "permutation"


def test_sign_flip_exact_enumeration_by_hand():
    # d = (1, 2, 3): sums over the 8 sign patterns are ±6, ±4, ±2, 0, 0; P(sum >= 6) = 1/8, two-sided 1/4.
    assert sign_flip_p(np.array([1.0, 2.0, 3.0]), n_perm=9999, seed=0) == pytest.approx(0.25)
    res = paired_difference([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], metric_kind="continuous", n_boot=100, seed=0)
    assert res.p == pytest.approx(0.25)


def test_two_row_bootstrap_interval_by_hand():
    # d = (1, 0): a resample's mean is 1, 1/2 or 0 with probability 1/4, 1/2, 1/4, so the 2.5th and
    # 97.5th percentiles are 0 and 1.
    res = paired_difference([1.0, 0.0], [0.0, 0.0], metric_kind="binary", n_boot=2000, seed=0)
    assert (res.diff, res.ci_low, res.ci_high, res.p) == (0.5, 0.0, 1.0, 1.0)


def test_nan_pairs_are_dropped_and_result_is_seeded():
    a = [1.0, np.nan, 0.0, 1.0, 1.0, 0.0]
    b = [0.0, 1.0, np.nan, 1.0, 0.0, 0.0]
    res = paired_difference(a, b, metric_kind="binary", n_boot=300, seed=5)
    assert res.n == 4 and res.diff == pytest.approx(0.75 - 0.25)
    assert res == paired_difference(a, b, metric_kind="binary", n_boot=300, seed=5)
    empty = paired_difference([np.nan], [1.0], metric_kind="binary", n_boot=10, seed=0)
    assert empty.n == 0 and math.isnan(empty.diff)
    with pytest.raises(ValueError, match="one length"):
        paired_difference([1.0, 0.0], [1.0], metric_kind="binary", n_boot=10, seed=0)


def test_stat_variant_matches_the_mean_variant_for_accuracy():
    # Accuracy as a statistic of (pred, gold) is the mean of per-row correctness: same diff, the same
    # resampled rows for a seed (scipy's paired bootstrap resamples row indices), and with 10 rows both
    # permutation tests enumerate all 2^10 swaps, so p agrees exactly.
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 3, 10)
    pa = np.where(rng.random(10) < 0.8, gold, (gold + 1) % 3)
    pb = np.where(rng.random(10) < 0.4, gold, (gold + 2) % 3)
    stat = paired_difference_stat(pa, pb, gold, _accuracy, n_boot=400, seed=1)
    mean = paired_difference(
        (pa == gold).astype(float), (pb == gold).astype(float), metric_kind="continuous", n_boot=400, seed=1
    )
    assert stat.diff == pytest.approx(mean.diff)
    assert (stat.ci_low, stat.ci_high) == pytest.approx((mean.ci_low, mean.ci_high))
    assert stat.p == pytest.approx(mean.p)


def test_stat_variant_balanced_accuracy_sees_majority_collapse():
    # b predicts the majority label everywhere: accuracy 0.7 but balanced accuracy 1/2; a is right on
    # every row (string labels work as they are). Only the 12 "pos" rows are discordant; swapping j of
    # them gives diff (12 − 2j)/24, as extreme as 1/2 only for j = 0 or 12: p ≈ 2/2^12, far below 0.05.
    # With 20 rows of which 4 "pos", only 4 rows are discordant: p = 2/2^4 (not significant), here
    # estimated from 999 random swaps (SE 0.01).
    gold = np.array(["neg"] * 28 + ["pos"] * 12)
    res = paired_difference_stat(
        gold, np.full(40, "neg"), gold, _balanced_accuracy, n_boot=200, seed=0, n_perm=999
    )
    assert res.diff == pytest.approx(0.5)
    assert res.ci_low > 0 and res.p < 0.01
    few = np.array(["neg"] * 16 + ["pos"] * 4)
    weak = paired_difference_stat(
        few, np.full(20, "neg"), few, _balanced_accuracy, n_boot=50, seed=0, n_perm=999
    )
    assert weak.p == pytest.approx(2 / 16, abs=0.04)
    same = paired_difference_stat(gold, gold.copy(), gold, _balanced_accuracy, n_boot=50, seed=0)
    assert (same.diff, same.ci_low, same.ci_high, same.p) == (0.0, 0.0, 0.0, 1.0)


# ------------------------------------------------------------------------------------------ replicates


def test_hierarchical_seed_spread_and_interval_by_hand():
    # Seed s shifts every row by c_s = 1/8, 2/8, 3/8 over a shared base: diff 1/4, seed sd 1/8. Row
    # resampling changes nothing; the mean of 3 seeds drawn with replacement is 1/8 (seed 0 thrice) with
    # probability 1/27 > 2.5%, likewise 3/8, so the CI is [1/8, 3/8]. The seed-averaged per-row
    # difference is 1/4 on each of 8 rows: exact sign-flip p = 2/2^8.
    base = np.tile([0.0, 0.5], 4)
    res = hierarchical_difference(
        [base + c for c in (0.125, 0.25, 0.375)], [base], metric_kind="continuous", n_boot=2000, seed=0
    )
    assert res.diff == pytest.approx(0.25) and res.seed_sd == pytest.approx(0.125)
    assert (res.ci_low, res.ci_high) == pytest.approx((0.125, 0.375))
    assert res.p == pytest.approx(2 / 256)
    assert (res.n, res.seeds, res.test) == (8, 3, "sign_flip")


def test_hierarchical_one_seed_is_paired_difference_and_paired_seeds():
    a, b = _pairs(8, 1, 5, 6)
    one = hierarchical_difference([a], [b], metric_kind="binary", n_boot=300, seed=2)
    assert one == paired_difference(a, b, metric_kind="binary", n_boot=300, seed=2)
    # equal seed counts pair seed s with seed s: per-seed differences 0.35 and (13 - 8)/20 = 0.25
    a2, b2 = _pairs(6, 1, 7, 6)
    two = hierarchical_difference([a, a2], [b, b2], metric_kind="binary", n_boot=300, seed=2)
    assert two.diff == pytest.approx((0.35 + 0.25) / 2)
    assert two.seed_sd == pytest.approx(np.std([0.35, 0.25], ddof=1))
    with pytest.raises(ValueError, match="seed counts"):
        hierarchical_difference([a, a, a], [b, b], metric_kind="binary", n_boot=10, seed=0)
    with pytest.raises(ValueError, match="different lengths"):
        hierarchical_difference([a, a[:5]], [b], metric_kind="binary", n_boot=10, seed=0)


def test_seed_variance_widens_the_interval():
    # Three seeds that disagree (+0.3, 0, -0.3 around a shared signal): the hierarchical CI must be
    # wider than a row-only bootstrap of the seed-averaged scores.
    rng = np.random.default_rng(0)
    b = rng.random(200)
    seeds = [b + 0.05 + s + rng.normal(0, 0.1, 200) for s in (0.3, 0.0, -0.3)]
    hier = hierarchical_difference(seeds, [b], metric_kind="continuous", n_boot=1000, seed=0, n_perm=199)
    flat = paired_difference(np.mean(seeds, axis=0), b, metric_kind="continuous", n_boot=1000, seed=0)
    assert hier.diff == pytest.approx(flat.diff)
    assert hier.ci_high - hier.ci_low > 5 * (flat.ci_high - flat.ci_low)
    assert hier.seed_sd == pytest.approx(0.3, abs=0.02)


# ------------------------------------------------------------------------------------------ BH, tables


def test_bh_qvalues_by_hand():
    # m = 4 non-NaN p's; sorted 0.005, 0.01, 0.03, 0.04 → p·m/rank = 0.02, 0.02, 0.04, 0.04.
    q = bh_qvalues([0.01, 0.04, np.nan, 0.03, 0.005])
    np.testing.assert_allclose(q, [0.02, 0.04, np.nan, 0.04, 0.02])
    # monotone step-up: p·m/rank = 0.08, 0.041 → the first q is lowered to 0.041
    np.testing.assert_allclose(bh_qvalues([0.04, 0.041]), [0.041, 0.041])
    np.testing.assert_allclose(bh_qvalues([0.01, 0.02, 0.03, 0.5]), [0.04, 0.04, 0.04, 0.5])
    assert bh_qvalues([]).shape == (0,) and np.isnan(bh_qvalues([np.nan])).all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bh_qvalues([0.2, 1.5])


def _row(i: int, p: float) -> dict:
    return {"diff": 0.1 * i, "ci_low": -0.1, "ci_high": 0.3, "p": p, "n": 50, "test": "mcnemar"}


def test_comparisons_and_delta_stats_tables():
    ps = [0.01, 0.04, 0.03, 0.005]
    rows = [
        {"a": "ft", "b": "base", "target": f"t{i}", "metric": "accuracy", **_row(i, p)}
        for i, p in enumerate(ps)
    ]
    table = comparisons_table(rows)
    assert list(table.columns) == COMPARISON_COLUMNS
    np.testing.assert_allclose(table["q"], [0.02, 0.04, 0.04, 0.02])
    assert table["significant"].tolist() == [True, True, True, True]
    assert table["seeds"].tolist() == [1] * 4 and table["n"].dtype.kind == "i"
    grouped = comparisons_table(
        [{**r, "metric": m} for r, m in zip(rows, ["acc", "acc", "f1", "f1"], strict=True)], by=["metric"]
    )
    np.testing.assert_allclose(grouped["q"], [0.02, 0.04, 0.03, 0.01])
    res = paired_difference(*_pairs(8, 1, 5, 6), metric_kind="binary", n_boot=200, seed=0)
    delta = delta_stats_table([{"source": "sst2", "target": "boolq", "metric": "accuracy", **res.as_dict()}])
    assert list(delta.columns) == DELTA_STATS_COLUMNS
    assert delta.loc[0, "delta"] == pytest.approx(0.35) and delta.loc[0, "q"] == pytest.approx(20 / 512)
    assert list(comparisons_table([]).columns) == COMPARISON_COLUMNS
    with pytest.raises(ValueError, match="target"):
        comparisons_table([{"a": "x", "b": "y", **_row(0, 0.1)}])


# ------------------------------------------------------------------------------------------ PCA null


def _rank_one(seed: int, rows: int = 6, cols: int = 8, noise: float = 0.3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    signal = 3 * rng.normal(size=(rows, 1)) @ rng.normal(size=(1, cols))
    return pd.DataFrame(signal + noise * rng.normal(size=(rows, cols)))


@pytest.mark.parametrize("standardize", [False, True])
def test_pca_null_finds_planted_rank_one_structure(standardize):
    null = pca_null(_rank_one(0), n_perm=300, seed=0, standardize=standardize)
    assert list(null.columns) == ["component", "explained", "null_p95", "p", "above_null"]
    assert null["p"].iloc[0] == 1 / 301  # no shuffle of a planted rank-one matrix explains as much
    pca = TransferPCA(standardize=standardize).fit(_rank_one(0))
    np.testing.assert_allclose(null["explained"], pca.explained_variance_ratio_)
    assert null["component"].tolist() == ["PC1", "PC2", "PC3", "PC4", "PC5"]
    assert null["above_null"].tolist() == [True, False, False, False, False]


def test_pca_null_pure_noise_is_rarely_above():
    # Under independent columns the observed ratio is exchangeable with the permuted ones, so
    # P(PC1 above its null 95th percentile) <= 5%: over 40 matrices, > 6 hits has probability < 0.5%.
    hits = sum(
        pca_null(pd.DataFrame(np.random.default_rng(s).normal(size=(5, 6))), n_perm=200, seed=s)[
            "above_null"
        ].any()
        for s in range(40)
    )
    assert hits <= 6


def test_pca_null_degenerate_two_rows():
    # Two rows leave one component after centring; it explains 100% under any shuffle: never above noise.
    null = pca_null(pd.DataFrame([[1.0, 2.0, 3.0], [0.0, 5.0, 1.0]]), n_perm=50, seed=0)
    assert null["explained"].tolist() == [1.0] and null["null_p95"].tolist() == [1.0]
    assert null["p"].tolist() == [1.0]  # every shuffle explains 100% too
    assert not null["above_null"].any()


# ------------------------------------------------------------------------------------------ row bootstrap


def test_row_bootstrap_by_hand():
    # Mean of all cells when rows (0, 0) and (1, 1) are resampled: 0, 1/2, 1 with prob 1/4, 1/2, 1/4.
    low, high = row_bootstrap(lambda m: m.mean(), [np.array([[0.0, 0.0], [1.0, 1.0]])], n_boot=2000, seed=0)
    assert (low, high) == (0.0, 1.0)
    # arrays are indexed by the same rows: Δ against itself correlates perfectly in every replicate
    d = np.arange(12.0).reshape(4, 3)
    low, high = row_bootstrap(
        lambda x, y: np.corrcoef(x.ravel(), y.ravel())[0, 1] if np.ptp(x) else np.nan,
        [d, d],
        n_boot=200,
        seed=0,
    )
    assert (low, high) == pytest.approx((1.0, 1.0))
    with pytest.raises(ValueError, match="row count"):
        row_bootstrap(np.mean, [d, d[:2]], n_boot=10, seed=0)


def _spearman_cells(d: np.ndarray, s: np.ndarray, use: np.ndarray) -> float:
    ok = use & ~np.isnan(d) & ~np.isnan(s)
    return float(sps.spearmanr(d[ok], s[ok]).statistic) if ok.sum() >= 3 and np.ptp(d[ok]) > 0 else np.nan


def test_row_bootstrap_is_wider_than_cell_bootstrap_when_cells_share_a_source():
    # Δ and the similarity both carry a per-source effect: cells of one source are not independent, so
    # resampling cells understates the uncertainty that resampling sources shows.
    rng = np.random.default_rng(0)
    effect = rng.normal(size=(6, 1))
    d = effect + 0.3 * rng.normal(size=(6, 6))
    s = effect + 0.3 * rng.normal(size=(6, 6))
    use = ~np.eye(6, dtype=bool)
    _, cell_low, cell_high, _ = spearman_ci(d[use], s[use], n_boot=400, seed=0)
    low, high = row_bootstrap(_spearman_cells, [d, s, use], n_boot=400, seed=0)
    assert high - low > 1.5 * (cell_high - cell_low)


# ------------------------------------------------------------------------------------------ power


def test_mde_formulas_by_hand():
    assert mde_paired_mean(100, 0.3) == pytest.approx((Z_A + Z_B) * 0.03)
    n, psi = 300, 0.2
    delta = mde_paired_proportion(n, psi)
    # Connor's equation holds at the returned δ, and δ is near the first-order (z_a + z_b)·√(ψ/n)
    assert math.sqrt(n) * delta == pytest.approx(Z_A * math.sqrt(psi) + Z_B * math.sqrt(psi - delta**2))
    assert delta == pytest.approx((Z_A + Z_B) * math.sqrt(psi / n), rel=0.02)
    assert mde_paired_proportion(3, 0.2) == math.inf and mde_paired_proportion(10, 0.05) == math.inf
    with pytest.raises(ValueError):
        mde_paired_proportion(100, 0.2, power=0.3)


# ------------------------------------------------------------------------------------------ simulations


def _null_binary_table(rng: np.random.Generator, n_cells: int, n: int) -> list[float]:
    """p-values of one table: per cell, two models right on each row with the same row-specific chance."""
    ps = []
    for _ in range(n_cells):
        chance = rng.uniform(0.2, 0.95, n)
        a, b = (rng.random(n) < chance).astype(float), (rng.random(n) < chance).astype(float)
        ps.append(paired_difference(a, b, metric_kind="binary", n_boot=100, seed=0).p)
    return ps


def test_null_simulation_binary_calls_at_most_five_percent():
    # 50 tables × 8 cells: share with p < 0.05 <= 5% + 2.5 binomial SEs (sqrt(.05·.95/400) ≈ 0.011);
    # BH at 0.05 under the complete null controls the chance of any call per table at 5% (+ 2.5 SEs of
    # 50 tables), and so the share of cells called.
    rng = np.random.default_rng(0)
    tables = [_null_binary_table(rng, 8, 120) for _ in range(50)]
    p = np.array(tables)
    q = np.array([bh_qvalues(t) for t in tables])
    assert (p < 0.05).mean() <= 0.05 + 2.5 * math.sqrt(0.05 * 0.95 / p.size)
    assert (q < 0.05).mean() <= 0.05
    assert (q < 0.05).any(axis=1).mean() <= 0.05 + 2.5 * math.sqrt(0.05 * 0.95 / len(tables))


def test_null_simulation_continuous_calls_at_most_five_percent():
    # Per-row scores in [0, 1] (rouge-like) with a row effect and independent noise per model.
    rng = np.random.default_rng(1)
    ps = []
    for i in range(200):
        row = rng.uniform(0.2, 0.8, 60)
        a, b = np.clip(row + rng.normal(0, 0.15, (2, 60)), 0, 1)
        ps.append(paired_difference(a, b, metric_kind="continuous", n_boot=50, seed=i, n_perm=199).p)
    assert (np.array(ps) < 0.05).mean() <= 0.05 + 2.5 * math.sqrt(0.05 * 0.95 / len(ps))


def test_planted_accuracy_difference_found_at_predicted_power():
    # δ = mde_paired_proportion(300, 0.2) planted as p10 − p01 with p10 + p01 = 0.2. The exact McNemar
    # test is slightly conservative against the normal approximation (about 0.78 instead of 0.80 in
    # 4000 simulated tables), so the tolerance is 0.03 for that plus 2.5 SEs of 250 tables (0.063).
    n, psi = 300, 0.2
    delta = mde_paired_proportion(n, psi)
    rng = np.random.default_rng(2)
    hits = 0
    for _ in range(250):
        n10, n01, n_same = rng.multinomial(n, [(psi + delta) / 2, (psi - delta) / 2, 1 - psi])
        a, b = _pairs(n10, n01, n_same // 2, n_same - n_same // 2)
        hits += paired_difference(a, b, metric_kind="binary", n_boot=20, seed=0).p < 0.05
    assert abs(hits / 250 - 0.8) <= 0.03 + 2.5 * math.sqrt(0.8 * 0.2 / 250)


def test_planted_mean_difference_found_at_predicted_power():
    # δ = mde_paired_mean(80, sd) planted on normal per-row differences; the permutation test behaves like
    # a t-test (power 0.79 at n = 80 against the normal approximation's 0.80). Tolerance: 0.02 for that
    # and the permutation p's resolution (199 resamples) plus 2.5 SEs of 150 replicates (0.08).
    n, sd = 80, 0.2
    delta = mde_paired_mean(n, sd)
    rng = np.random.default_rng(3)
    hits = 0
    for i in range(150):
        b = rng.uniform(0, 1, n)
        res = paired_difference(
            b + rng.normal(delta, sd, n), b, metric_kind="continuous", n_boot=20, seed=i, n_perm=199
        )
        hits += res.p < 0.05
    assert abs(hits / 150 - 0.8) <= 0.02 + 2.5 * math.sqrt(0.8 * 0.2 / 150)
