"""Pareto frontier of points where both coordinates are better when higher (domain vs general score)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pareto_mask(x: Sequence[float], y: Sequence[float]) -> np.ndarray:
    """(n,) bool: True where no other point is at least as good on both axes and strictly better on one.

    Points with a NaN coordinate are never on the frontier and dominate nothing; exact duplicates of a
    frontier point are all on it.
    """
    xs, ys = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(xs) & np.isfinite(ys)
    on = np.zeros(xs.shape, bool)
    for i in np.flatnonzero(ok):
        geq = ok & (xs >= xs[i]) & (ys >= ys[i])
        strictly = (xs > xs[i]) | (ys > ys[i])
        on[i] = not np.any(geq & strictly)
    return on
