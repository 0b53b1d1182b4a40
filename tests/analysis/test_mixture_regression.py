"""Score-vs-ratio regression for mixtures (issue 26 item 3): the grid, leave-one-mixture-out on a planted
score surface, and the constrained recommendation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spillover.analysis.mixture_regression import leave_one_mixture_out, loo_summary, recommend, simplex_grid

TASKS = ["a", "b", "c"]


def _planted(shares: list[tuple[float, float, float]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scores that rise with each task's own share, steeply near 0: s_t = 0.5 + 0.1 log(r_t + 0.01)."""
    ratios = pd.DataFrame(shares, columns=TASKS, index=[f"m{i}" for i in range(len(shares))])
    scores = 0.5 + 0.1 * np.log(ratios + 0.01)
    return ratios, scores


SHARES = [
    (0.6, 0.2, 0.2),
    (0.2, 0.6, 0.2),
    (0.2, 0.2, 0.6),
    (0.4, 0.4, 0.2),
    (0.4, 0.2, 0.4),
    (0.34, 0.33, 0.33),
]


def test_simplex_grid():
    grid = simplex_grid(TASKS, 0.5)
    assert sorted(map(tuple, grid.to_numpy())) == sorted(
        [(0, 0, 1), (0, 0.5, 0.5), (0, 1, 0), (0.5, 0, 0.5), (0.5, 0.5, 0), (1, 0, 0)]
    )
    assert len(simplex_grid(TASKS, 0.05)) == 231 and np.allclose(simplex_grid(TASKS, 0.05).sum(axis=1), 1)
    with pytest.raises(ValueError, match="does not divide 1"):
        simplex_grid(TASKS, 0.3)


def test_leave_one_mixture_out_ranks_a_planted_surface():
    ratios, scores = _planted(SHARES)
    loo = leave_one_mixture_out(ratios, scores)
    assert list(loo.columns) == ["mixture", "task", "measured", "predicted"] and len(loo) == 6 * 3
    summary = loo_summary(loo).set_index("task")
    assert (summary["spearman"] > 0.8).all() and (summary["n_mixtures"] == 6).all()
    # a surface the ratios do not explain: the rank correlation is not high
    noise = pd.DataFrame(np.random.default_rng(1).normal(size=(6, 3)), index=ratios.index, columns=TASKS)
    assert loo_summary(leave_one_mixture_out(ratios, noise))["spearman"].mean() < 0.5


def test_a_proxy_fit_is_judged_against_the_final_scores():
    ratios, scores = _planted(SHARES)
    # a short run that ranks mixtures as the full run does, on another scale: the same rank correlation
    proxy = leave_one_mixture_out(ratios, scores, fit_scores=0.3 * scores - 0.1)
    assert (proxy["measured"] == leave_one_mixture_out(ratios, scores)["measured"]).all()
    assert (loo_summary(proxy)["spearman"] > 0.8).all()
    # a short run whose ranking is reversed predicts the final ranking backwards
    assert (loo_summary(leave_one_mixture_out(ratios, scores, fit_scores=-scores))["spearman"] < -0.8).all()
    both = pd.concat(
        [proxy.assign(fit_on="proxy"), leave_one_mixture_out(ratios, scores).assign(fit_on="final")]
    )
    summary = loo_summary(both, by=["fit_on"])
    assert list(summary.columns) == ["fit_on", "task", "spearman", "mae", "n_mixtures"]
    assert list(summary["fit_on"]) == ["proxy"] * 3 + ["final"] * 3


def test_recommend_stays_inside_the_measured_range_and_respects_epsilon():
    ratios, scores = _planted(SHARES)
    best = recommend(ratios, scores, base=pd.Series(0.0, index=TASKS), epsilon=0.0, step=0.05, top=3)
    assert len(best) == 3 and best["feasible"].all()
    r = best[[f"ratio/{t}" for t in TASKS]].to_numpy()
    assert (r >= 0.2 - 1e-9).all() and (r <= 0.6 + 1e-9).all()  # never outside what was measured
    assert np.allclose(r.sum(axis=1), 1) and best["mean"].is_monotonic_decreasing
    # a floor only the balanced end meets: task a must stay ≥ its score at share 0.4
    floor = pd.Series({"a": 0.5 + 0.1 * np.log(0.41), "b": -9.0, "c": -9.0})
    constrained = recommend(ratios, scores, base=floor, epsilon=0.0, step=0.05)
    assert (constrained["ratio/a"] >= 0.4 - 0.05).all() and constrained["feasible"].all()
    impossible = recommend(ratios, scores, base=pd.Series(9.0, index=TASKS), step=0.05, top=2)
    assert len(impossible) == 2 and not impossible["feasible"].any()
