"""DataFrames as escaped HTML tables for the report, with numbers formatted for reading.

Floats show 3 significant digits (0.0123, 0.123, 12.3, 1,234; scientific outside 1e-4..1e6), a float
column whose values are all whole numbers shows as integers, NaN/None/NA as "–". Every header and cell
is passed through `html.escape`, so dataset text is shown literally and never becomes markup.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable

import numpy as np
import pandas as pd

MISSING = "–"
MAX_ROWS = 200


def _is_missing(value: object) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def format_float(value: float) -> str:
    """3 significant digits without scientific notation for everyday magnitudes."""
    if math.isnan(value):
        return MISSING
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e6 or magnitude < 1e-4:
        return f"{value:.2e}"
    if magnitude >= 999.5:
        return f"{value:,.0f}"
    decimals = max(0, 2 - math.floor(math.log10(magnitude)))
    text = f"{value:.{decimals}f}"
    return "0" if float(text) == 0 else text


def format_value(value: object) -> str:
    """One cell as text (not yet escaped)."""
    if _is_missing(value):
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return format_float(float(value))
    return str(value)


def _formatter(column: pd.Series) -> Callable[[object], str]:
    """Whole-number float columns (counts with a NaN) read better as integers."""
    if pd.api.types.is_float_dtype(column):
        finite = column.to_numpy(dtype=float)
        finite = finite[np.isfinite(finite)]
        if finite.size and np.all(finite == np.round(finite)) and np.all(np.abs(finite) < 1e15):
            return lambda v: (
                MISSING if _is_missing(v) else (str(int(v)) if math.isfinite(v) else format_float(v))
            )
    return format_value


def _is_numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def _label(value: object) -> str:
    """Header text; MultiIndex tuples are joined with " / "."""
    if isinstance(value, tuple):
        return " / ".join(format_value(v) for v in value)
    return format_value(value)


def _shows_index(frame: pd.DataFrame) -> bool:
    index = frame.index
    default = isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1
    return not default or any(name is not None for name in index.names)


def table_html(caption: str, frame: pd.DataFrame, *, max_rows: int = MAX_ROWS) -> str:
    """An escaped `<table>` with a caption; numeric columns right-aligned; at most `max_rows` rows."""
    shown = frame.iloc[:max_rows]
    with_index = _shows_index(frame)
    heads = ([_label(n) if n is not None else "" for n in frame.index.names] if with_index else []) + [
        _label(c) for c in frame.columns
    ]
    numeric = ([False] * frame.index.nlevels if with_index else []) + [
        _is_numeric(frame.iloc[:, i]) for i in range(frame.shape[1])
    ]
    formatters = [_formatter(frame.iloc[:, i]) for i in range(frame.shape[1])]
    rows = []
    for key, values in zip(shown.index, shown.itertuples(index=False, name=None), strict=True):
        keys = (key if isinstance(key, tuple) else (key,)) if with_index else ()
        cells = [format_value(k) for k in keys] + [f(v) for f, v in zip(formatters, values, strict=True)]
        rows.append(_row("td", cells, numeric, n_header=len(keys)))
    more = len(frame) - len(shown)
    note = (
        f'<p class="table-note">Showing the first {len(shown)} of {len(frame)} rows.</p>' if more > 0 else ""
    )
    return (
        f'<figure class="table"><figcaption>{html.escape(caption)}</figcaption>'
        f'<div class="table-scroll"><table><thead>{_row("th", heads, numeric, 0)}</thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>{note}</figure>"
    )


def _row(tag: str, cells: list[str], numeric: list[bool], n_header: int) -> str:
    parts = []
    for i, (text, is_num) in enumerate(zip(cells, numeric, strict=True)):
        cell_tag = "th" if tag == "th" or i < n_header else "td"
        scope = ' scope="row"' if tag == "td" and i < n_header else ""
        cls = ' class="num"' if is_num else ""
        parts.append(f"<{cell_tag}{scope}{cls}>{html.escape(text)}</{cell_tag}>")
    return f"<tr>{''.join(parts)}</tr>"
