"""Generalization tables (methods.md §2): label every (trained-on, evaluated-on) cell in-domain,
out-of-domain or cross-task, and average scores per setting, method, shot count and training size.

Settings (methods.md §2), from the tasks' `task_type` and `domain`: in-domain = the same task type and the
same domain (other datasets count, e.g. two tweet-toxicity datasets); out-of-domain = the same task type,
another domain; cross-task = another task type. A task without a `domain` is a domain of its own (only the
dataset itself is in-domain for it).

Pure functions over a long `cells` frame with one row per evaluated (model, target, shots):
columns `source` (None for the base model), `method`, `size`, `target`, `shots`, `value`, `metric`, `n`,
`ci_low`, `ci_high`. Scores of different metrics (accuracy, Rouge-L) are all in [0, 1] and averaged as
they are; per-cell detail keeps them apart.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

ID, OOD, CROSS = "in-domain", "out-of-domain", "cross-task"
SETTINGS = (ID, OOD, CROSS)


def cell_setting(
    trained_on: str,
    target: str,
    task_types: Mapping[str, str],
    domains: Mapping[str, str | None] | None = None,
) -> str:
    """In-domain: the same task type and the same domain (or the same dataset); out-of-domain: the same
    task type, another domain; cross-task: another task type. `domains`: task → domain (missing or None:
    the task is a domain of its own; `domains` None: every task is)."""
    if trained_on == target:
        return ID
    if task_types[trained_on] != task_types[target]:
        return CROSS
    domains = domains or {}
    same = domains.get(trained_on) is not None and domains.get(trained_on) == domains.get(target)
    return ID if same else OOD


def label_cells(
    cells: pd.DataFrame,
    source_tasks: Mapping[str, str],
    task_types: Mapping[str, str],
    domains: Mapping[str, str | None] | None = None,
) -> pd.DataFrame:
    """Add `trained_on` (the source's task), `setting`, the base model's score on the same target and
    shot count (`base`), and `delta` = value − base. Base rows keep `setting` empty."""
    out = cells.copy()
    tuned = out["source"].notna()
    out["trained_on"] = out["source"].map(source_tasks)
    out["setting"] = None
    out.loc[tuned, "setting"] = [
        cell_setting(s, t, task_types, domains)
        for s, t in zip(out.loc[tuned, "trained_on"], out.loc[tuned, "target"], strict=True)
    ]
    base = out[~tuned].set_index(["target", "shots"])["value"]
    out["base"] = [base.get((t, k), np.nan) for t, k in zip(out["target"], out["shots"], strict=True)]
    out["delta"] = out["value"] - out["base"]
    return out


def _column(shots: int, setting: str) -> str:
    return f"{shots}-shot {setting}"


def _columns(shots: list[int]) -> list[str]:
    return [_column(k, s) for k in shots for s in SETTINGS]


def generalization_table(cells: pd.DataFrame, size, value: str = "value") -> pd.DataFrame:
    """Rows: (trained-on source, method) at training size `size`, plus a `base` row; columns: setting ×
    shots, each the mean of `value` over that row's cells. The base row averages the base model's score
    over every tuned row's cells of that column (so it is the reference for the column as a whole).
    Empty combinations (e.g. no out-of-domain target for a source) are NaN."""
    tuned = cells[cells["source"].notna() & at_size(cells["size"], size)]
    shots = sorted(cells["shots"].unique())
    cols = _columns(shots)
    keyed = tuned.assign(
        column=[_column(k, s) for k, s in zip(tuned["shots"], tuned["setting"], strict=True)]
    )
    table = keyed.pivot_table(
        index=["source", "method"], columns="column", values=value, aggfunc="mean", sort=False
    ).reindex(columns=cols)
    table.index = [f"{s} · {m.upper()}" for s, m in table.index]
    if value == "value":
        base = keyed.groupby("column")["base"].mean().reindex(cols)
        table = pd.concat([pd.DataFrame([base.values], index=["base"], columns=cols), table])
    table.columns.name = None
    return table


def fticl_comparison(cells: pd.DataFrame) -> pd.DataFrame:
    """FT vs FTICL per source, size, shots and setting: mean score of each and FTICL − FT."""
    tuned = cells[cells["source"].notna()]
    keys = ["source", "size", "shots", "setting"]
    wide = tuned.pivot_table(index=keys, columns="method", values="value", aggfunc="mean", dropna=False)
    wide = wide.dropna(how="all").reset_index()
    wide.columns.name = None
    if {"ft", "fticl"} <= set(wide.columns):
        wide["fticl_minus_ft"] = wide["fticl"] - wide["ft"]
    return wide


def size_curves(cells: pd.DataFrame) -> pd.DataFrame:
    """Mean score and mean Δ vs training size per source, method, shots and setting."""
    tuned = cells[cells["source"].notna()]
    keys = ["source", "method", "shots", "setting", "size"]
    out = tuned.groupby(keys, dropna=False)[["value", "delta"]].mean().reset_index()
    return out.rename(columns={"value": "score"})


def cell_detail(cells: pd.DataFrame) -> pd.DataFrame:
    """Every evaluated cell with its label, base score and Δ, sorted for reading."""
    cols = [
        "source",
        "method",
        "size",
        "trained_on",
        "target",
        "setting",
        "shots",
        "metric",
        "value",
        "ci_low",
        "ci_high",
        "n",
        "base",
        "delta",
    ]
    out = cells[cells["source"].notna()][cols]
    return out.sort_values(
        ["source", "method", "size", "shots", "setting", "target"], kind="stable"
    ).reset_index(drop=True)


def at_size(sizes: pd.Series, size) -> pd.Series:
    return sizes.isna() if size is None else sizes == size
