"""The transfer matrix (methods §1.1): scores M, base row b, Δ = M − b, relative Δ, asymmetry.

Input is the long scores table the study stores: one row per (model, target) with columns `model`,
`target`, `value`. `model` is a source label ("sst2", "sst2+mislabel(fraction=1.0)") or the base label
("base"). A source label's task is the part before the first "+" (`task_of`), which is how the diagonal
(in-task cells) is recognised; task names cannot contain "+".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from spillover.errors import SpilloverError

log = logging.getLogger(__name__)

BASE = "base"


@dataclass(frozen=True)
class TransferTables:
    """M (sources × targets), b (targets), Δ, relative Δ and the asymmetry table.

    `asymmetry` has one row per unordered pair {a, b} that appears both as source and target in both
    directions: columns `a`, `b`, `delta_ab` (Δ of the model tuned on a, on target b), `delta_ba`,
    `asymmetry` = delta_ab − delta_ba.
    """

    scores: pd.DataFrame
    base: pd.Series
    delta: pd.DataFrame
    relative: pd.DataFrame
    asymmetry: pd.DataFrame


def task_of(source: str) -> str:
    """The task a source label was trained on: "sst2+mislabel(fraction=1.0)" -> "sst2"."""
    return source.split("+", 1)[0]


def diagonal_mask(frame: pd.DataFrame) -> np.ndarray:
    """(I, N) bool: True where the row's source task is the column's target (in-task cells)."""
    return np.array([[task_of(str(s)) == str(t) for t in frame.columns] for s in frame.index], dtype=bool)


def _ordered(found: Sequence[str], given: Sequence[str] | None, kind: str) -> list[str]:
    if given is None:
        return list(dict.fromkeys(found))
    missing = [x for x in given if x not in set(found)]
    if missing:
        log.warning("%s(s) with no scores: %s (their cells are NaN)", kind, ", ".join(missing))
    return list(given)


def score_matrix(
    scores: pd.DataFrame,
    rows: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    metrics: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Pivot a long (model, target, value) table to models × targets; duplicates are an error.

    metrics: {target: its task's own metric}; rows of other metrics (those a classification target reports
    beside its own, e.g. macro_f1) are left out first. Needed once a table holds several metrics."""
    missing = {"model", "target", "value"} - set(scores.columns)
    if missing:
        raise SpilloverError(f"scores table lacks column(s) {', '.join(sorted(missing))}")
    if metrics is not None and "metric" in scores.columns:
        own = scores["target"].map(lambda t: metrics.get(t))
        scores = scores[own.isna() | (own == scores["metric"])]
    dup = scores.duplicated(["model", "target"], keep=False)
    if dup.any():
        pairs = scores.loc[dup, ["model", "target"]].drop_duplicates().head(3).values.tolist()
        raise SpilloverError(f"scores table has several values for (model, target) pairs such as {pairs}")
    wide = scores.pivot(index="model", columns="target", values="value").astype(float)
    row_order = _ordered(list(scores["model"]), rows, "model")
    col_order = _ordered(list(scores["target"]), targets, "target")
    return wide.reindex(index=row_order, columns=col_order).rename_axis(index="source", columns="target")


def asymmetry_table(delta: pd.DataFrame) -> pd.DataFrame:
    """Pairs (a, b), a before b in row order, with both Δ[a, b] and Δ[b, a] present."""
    names = [s for s in delta.index if s in delta.columns]
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ab, ba = delta.at[a, b], delta.at[b, a]
            if pd.notna(ab) and pd.notna(ba):
                rows.append({"a": a, "b": b, "delta_ab": ab, "delta_ba": ba, "asymmetry": ab - ba})
    return pd.DataFrame(rows, columns=["a", "b", "delta_ab", "delta_ba", "asymmetry"])


def transfer_tables(
    scores: pd.DataFrame,
    sources: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    base: str = BASE,
    eps: float = 1e-3,
    metrics: Mapping[str, str] | None = None,
) -> TransferTables:
    """Build M, b, Δ = M − b and Δ / max(b, eps) from the long scores table.

    sources: row order (default: order of first appearance, base excluded); targets likewise. metrics:
    {target: its own metric}, as in `score_matrix`.
    """
    if base not in set(scores["model"]):
        raise SpilloverError(f"scores table has no base-model row (model == '{base}')")
    if sources is None:
        sources = [m for m in dict.fromkeys(scores["model"]) if m != base]
    wide = score_matrix(scores, [base, *sources], targets, metrics)
    b = wide.loc[base].rename("base")
    m = wide.drop(index=base)
    delta = m - b
    relative = delta / np.maximum(b, eps)
    return TransferTables(m, b, delta, relative, asymmetry_table(delta))
