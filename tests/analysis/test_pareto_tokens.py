"""Pareto frontier, token-probability summaries and the code-length table against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spillover.analysis.pareto import pareto_mask
from spillover.analysis.tokens import code_length_table, empirical_cdf, probability_summary


def test_pareto_mask_by_hand():
    x = [0.1, 0.5, 0.4, 0.5, 0.9, np.nan, 0.2]
    y = [0.9, 0.5, 0.4, 0.5, 0.1, 1.0, 0.8]
    # (0.4,0.4) is dominated by (0.5,0.5); (0.2,0.8) is not dominated (nobody has x ≥ .2 and y ≥ .8 but .1,.9
    # fails x); the NaN point is ignored; duplicates of a frontier point both stay
    assert pareto_mask(x, y).tolist() == [True, True, False, True, True, False, True]


def test_probability_summary_and_cdf():
    p = [1.0, 0.5, 0.25, 0.05]
    s = probability_summary(p, [0.1, 0.5])
    assert s["n_tokens"] == 4 and s["median_p"] == pytest.approx(0.375)
    assert s["frac_p<0.1"] == 0.25 and s["frac_p<0.5"] == 0.5
    assert s["mean_bits"] == pytest.approx((0 + 1 + 2 + math.log2(20)) / 4)
    cdf = empirical_cdf(p, [0.0, 0.25, 0.5, 1.0])
    assert cdf["cdf"].tolist() == [0.0, 0.5, 0.75, 1.0]


def test_code_length_table_by_hand():
    results = {
        "base": {"dom": {"bits": 3.0}, "g1": {"bits": 1.0}, "g2": {"bits": 2.0}},
        "tuned": {"dom": {"bits": 1.5}, "g1": {"bits": 1.5}, "g2": {"bits": 3.0}},
    }
    t = code_length_table(results, "base", {"base": "dom", "tuned": "dom"}, ["g1", "g2"]).set_index("model")
    assert t.loc["tuned", "dCL_domain"] == -1.5
    assert t.loc["tuned", "CL_general"] == 2.25 and t.loc["tuned", "dCL_general"] == pytest.approx(0.75)
    assert t.loc["tuned", "dCL_g2"] == 1.0 and t.loc["base", "dCL_general"] == 0.0
