"""Paired evidence for every study kind, written once (architecture principle 8): per-row scores of finished
evaluation jobs, and the paired comparison of two evaluated models on the same test rows.

Both sides of a comparison are read from the jobs' `predictions.jsonl` (field `correct`: the row's score
under the task's metric) and aligned by example id, so only rows both models scored are compared. The
statistics themselves (paired bootstrap CI, exact McNemar or paired permutation p, BH q-values, seeds then
rows for replicates) are `analysis.paired`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from spillover.analysis.paired import PairedResult, hierarchical_difference, metric_kind_of
from spillover.engine.plan import Job
from spillover.evaluation.predictions import read_predictions
from spillover.studies.contract import Results

PREDICTIONS = "predictions.jsonl"
N_BOOT = 2000  # bootstrap replicates per comparison
N_PERM = 9999  # permutations per continuous-metric comparison (smallest p: 1e-4)


def row_scores(results: Results, job: Job | str) -> pd.Series:
    """One finished evaluation job's per-row scores (float), indexed by example id."""
    rows = read_predictions(results.job_dir(job) / PREDICTIONS)
    return pd.Series(
        [float(r["correct"]) for r in rows], index=pd.Index([str(r["id"]) for r in rows], name="id")
    )


def compare_jobs(
    results: Results,
    a: Sequence[Job | str],
    b: Sequence[Job | str],
    *,
    seed: int = 0,
    n_boot: int = N_BOOT,
) -> PairedResult:
    """Model a vs model b on the same rows: each side one evaluation job per training seed (a side with
    one job is shared by every seed of the other, e.g. the base model). With one job per side this is the
    plain paired test; with seeds the difference is averaged over them and the interval is a seeds-then-rows
    bootstrap (`analysis.paired.hierarchical_difference`)."""
    side_a = [row_scores(results, j) for j in a]
    side_b = [row_scores(results, j) for j in b]
    common = sorted(set.intersection(*(set(s.index) for s in side_a + side_b)))
    per_a = [s.loc[common].to_numpy() for s in side_a]
    per_b = [s.loc[common].to_numpy() for s in side_b]
    kind = metric_kind_of(*per_a, *per_b)
    return hierarchical_difference(per_a, per_b, metric_kind=kind, n_boot=n_boot, seed=seed, n_perm=N_PERM)


def comparison_row(a: str, b: str, target: str, metric: str, result: PairedResult) -> dict[str, Any]:
    """One row for `analysis.paired.comparisons_table`."""
    return {"a": a, "b": b, "target": target, "metric": metric, **result.as_dict()}


def significance_sentence(table: pd.DataFrame, what: str = "comparisons") -> str:
    """'k of n comparisons are significant (BH q < 0.05); the rest are not at n = …'."""
    if table.empty:
        return f"No {what} finished yet."
    k, n = int(table["significant"].sum()), len(table)
    rows = table["n"].dropna()
    at = f"{int(rows.min())}" if rows.nunique() <= 1 else f"{int(rows.min())}–{int(rows.max())}"
    return (
        f"{k} of {n} {what} are significant (Benjamini–Hochberg q < 0.05 over this table); "
        f"the other {n - k} are not significant at n = {at} test rows."
    )


def mask_insignificant(values: pd.DataFrame, significant: pd.DataFrame) -> pd.DataFrame:
    """`values` with the cells that are not significant set to NaN (for a faded overlay)."""
    return values.where(significant.reindex_like(values).fillna(False).astype(bool), np.nan)
