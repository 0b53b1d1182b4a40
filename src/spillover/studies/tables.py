"""Export a study's tables as CSV and Parquet under `tables/`, atomically (the folder is replaced whole)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from spillover.atomic import atomic_dir


def write_tables(tables: dict[str, pd.DataFrame | pd.Series], folder: Path) -> list[str]:
    with atomic_dir(folder) as tmp:
        for name, frame in tables.items():
            frame = frame.to_frame() if isinstance(frame, pd.Series) else frame
            keep_index = not isinstance(frame.index, pd.RangeIndex)
            frame.to_csv(tmp / f"{name}.csv", index=keep_index)
            _parquet_ready(frame).to_parquet(tmp / f"{name}.parquet", index=keep_index)
    return sorted(tables)


def _parquet_ready(frame: pd.DataFrame) -> pd.DataFrame:
    """Parquet needs one type per column: nested values (dicts, lists) become JSON-ish strings."""
    out = frame.copy()
    out.columns = [str(c) for c in out.columns]
    for col in out.columns:
        if out[col].dtype == object and out[col].map(lambda v: isinstance(v, dict | list)).any():
            out[col] = out[col].map(lambda v: None if v is None else str(v))
    return out
