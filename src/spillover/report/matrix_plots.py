"""Figures of the transfer matrix and its latent traits: annotated heatmaps, scree plot, PCA biplot."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from spillover.report.style import (
    ACCENT,
    DIVERGING,
    HEIGHT,
    INK,
    MUTED,
    SEQUENTIAL,
    esc,
    escape_all,
    finish,
    short,
)

_CELL_PX, _MAX_CELL_PX = 34, 46
FADED = 0.35  # opacity of cells that are not significant


def _cell_text(z: np.ndarray, fmt: str) -> list[list[str]]:
    """Annotation strings for heatmap cells; NaN shows as an en dash."""
    return [["–" if not np.isfinite(v) else format(v, fmt) for v in row] for row in z]


def _z(frame: pd.DataFrame | pd.Series) -> np.ndarray:
    return np.atleast_2d(np.asarray(frame, dtype=float))


def _heat_trace(
    z: np.ndarray,
    x: list,
    y: list,
    fmt: str,
    coloraxis: str,
    label: str,
    text: list[list[str]] | None = None,
    **style,
) -> go.Heatmap:
    return go.Heatmap(
        z=np.where(np.isfinite(z), z, None).tolist(),
        x=x,
        y=y,
        text=_cell_text(z, fmt) if text is None else text,
        texttemplate="%{text}",
        coloraxis=coloraxis,
        xgap=2,
        ygap=2,
        hovertemplate=f"%{{y}} → %{{x}}<br>{esc(label)}: %{{z:.6g}}<extra></extra>",
        **style,
    )


def _marked_traces(
    z: np.ndarray, marks: np.ndarray, x: list, y: list, fmt: str, label: str
) -> list[go.Heatmap]:
    """Two layers for a significance mask: every cell faded, then the marked cells at full colour with
    a "*" after the value (that layer has gaps elsewhere and no hover on them)."""
    text = np.array(_cell_text(z, fmt), dtype=object).reshape(z.shape)
    faded = _heat_trace(z, x, y, fmt, "coloraxis", label, np.where(marks, "", text).tolist(), opacity=FADED)
    full = _heat_trace(
        np.where(marks, z, np.nan), x, y, fmt, "coloraxis", label, np.where(marks, text + "*", "").tolist()
    )
    faded.update(name="not significant", hovertemplate=_hover_note(faded, "not significant"))
    full.update(name="significant", hovertemplate=_hover_note(full, "significant"), hoverongaps=False)
    return [faded, full]


def _hover_note(trace: go.Heatmap, note: str) -> str:
    return trace.hovertemplate.replace("<extra>", f"<br>{note}<extra>")


def _color_range(values: np.ndarray, diverging: bool, zmid: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (zmid - 1.0, zmid + 1.0)
    if diverging:
        half = float(np.max(np.abs(finite - zmid))) or 1.0
        return (zmid - half, zmid + half)
    lo, hi = float(finite.min()), float(finite.max())
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def heatmap(
    frame: pd.DataFrame,
    title: str,
    *,
    diverging: bool,
    zmid: float = 0.0,
    fmt: str = ".2f",
    base_row: pd.Series | None = None,
    base_label: str = "base",
    x_title: str = "",
    y_title: str = "",
    value_label: str = "value",
    significant: pd.DataFrame | None = None,
) -> go.Figure:
    """Annotated heatmap of `frame` (rows top to bottom as in the frame, columns left to right).

    `diverging=True` (for Δ) uses a red–blue scale centred at `zmid` with a symmetric range; otherwise
    (for M) a sequential scale over the data range. `base_row` (indexed like the columns) is drawn as a
    separate row above the matrix: on the same colour scale for M, in neutral grey for Δ (it holds base
    scores, not differences). Cells show `format(v, fmt)`, NaN as "–"; hover shows 6 significant digits.

    `significant` (booleans aligned to `frame` by row and column labels; missing or NaN = False) marks
    cells: marked ones are drawn at full colour with a "*" after the value, the rest faded (opacity
    `FADED`); hover says which. Say what the mark means (e.g. "* = BH q < 0.05") in the title.
    """
    z = _z(frame)
    x, y = escape_all(frame.columns), escape_all(frame.index)
    n_rows = len(y) + (1 if base_row is not None else 0)
    cell = max(22, min(_MAX_CELL_PX, int(560 / max(n_rows, 1)), _CELL_PX + 10))
    height = 56 + 110 + cell * n_rows + (16 if base_row is not None else 0)
    all_values = z if base_row is None or diverging else np.vstack([z, _z(base_row.reindex(frame.columns))])
    cmin, cmax = _color_range(all_values, diverging, zmid)
    coloraxis = dict(
        colorscale=DIVERGING if diverging else SEQUENTIAL,
        cmin=cmin,
        cmax=cmax,
        colorbar=dict(title=dict(text=esc(value_label), side="top"), thickness=14, len=1, y=0.5),
    )
    if significant is None:
        main = [_heat_trace(z, x, y, fmt, "coloraxis", value_label)]
    else:
        marks = significant.reindex(index=frame.index, columns=frame.columns).eq(True).to_numpy()
        main = _marked_traces(z, marks, x, y, fmt, value_label)
    if base_row is None:
        fig, bottom = go.Figure(main), {}
        fig.update_yaxes(autorange="reversed")
    else:
        fig = _with_base_row(main, base_row.reindex(frame.columns), x, fmt, diverging, n_rows, base_label)
        bottom = dict(row=2, col=1)
    # long names are cut on the axes (hover shows them whole); long column names slant so that each
    # ends under its own column instead of running off the right edge
    slant = -35 if max((len(str(c)) for c in frame.columns), default=0) > 10 else None
    fig.update_xaxes(
        automargin=True,
        showgrid=False,
        tickvals=x,
        ticktext=[esc(short(c)) for c in frame.columns],
        tickangle=slant,
    )
    fig.update_yaxes(automargin=True, showgrid=False)
    fig.update_yaxes(tickvals=y, ticktext=[esc(short(r, 36)) for r in frame.index], **bottom)
    fig.update_xaxes(title_text=esc(x_title), **bottom)
    fig.update_yaxes(title_text=esc(y_title), **bottom)
    return finish(fig, title, height, coloraxis=coloraxis, plot_bgcolor="white")


def _with_base_row(
    main: list[go.Heatmap], base: pd.Series, x: list, fmt: str, diverging: bool, n_rows: int, label: str
) -> go.Figure:
    """Two stacked panels sharing the x axis: the base row on top, the matrix below, a gap between."""
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[1, n_rows - 1], vertical_spacing=0.035
    )
    axis = "coloraxis2" if diverging else "coloraxis"
    fig.add_trace(_heat_trace(_z(base), x, [esc(label)], fmt, axis, label), row=1, col=1)
    for trace in main:
        fig.add_trace(trace, row=2, col=1)
    fig.update_yaxes(autorange="reversed", row=2, col=1)
    fig.update_yaxes(tickfont=dict(color=MUTED), row=1, col=1)
    if diverging:
        fig.update_layout(coloraxis2=dict(colorscale=[[0, "#eef1f4"], [1, "#eef1f4"]], showscale=False))
    return fig


def scree(
    explained_ratio: Sequence[float],
    cumulative: Sequence[float],
    *,
    names: Sequence[str] | None = None,
    title: str = "Variance explained by each component",
) -> go.Figure:
    """Bars of each component's explained-variance ratio plus the cumulative ratio as a line (percent)."""
    names = escape_all(names if names is not None else [f"PC{i + 1}" for i in range(len(explained_ratio))])
    ratio, cum = [float(v) for v in explained_ratio], [float(v) for v in cumulative]
    fig = go.Figure()
    fig.add_bar(
        x=names,
        y=ratio,
        name="per component",
        marker_color=ACCENT,
        text=[f"{v:.0%}" for v in ratio],
        textposition="outside",
        cliponaxis=False,
        hovertemplate="%{x}: %{y:.4%}<extra>per component</extra>",
    )
    fig.add_scatter(
        x=names,
        y=cum,
        name="cumulative",
        mode="lines+markers",
        line=dict(color=INK, width=2),
        hovertemplate="%{x}: %{y:.4%}<extra>cumulative</extra>",
    )
    fig.update_yaxes(tickformat=".0%", range=[0, 1.08], title_text="variance explained")
    legend = dict(x=0.99, xanchor="right", y=0.45, yanchor="top", bgcolor="rgba(255,255,255,0.8)")
    return finish(fig, title, HEIGHT, legend=legend, bargap=0.35)


def _arrow(x: float, y: float) -> dict:
    """A layout annotation drawing an arrow from the origin to (x, y) in data coordinates."""
    return dict(
        x=x,
        y=y,
        ax=0,
        ay=0,
        xref="x",
        yref="y",
        axref="x",
        ayref="y",
        text="",
        showarrow=True,
        arrowhead=2,
        arrowsize=1,
        arrowwidth=1.4,
        arrowcolor=MUTED,
    )


def _alternating_positions(x: np.ndarray) -> list[str]:
    """Label above / below by turns along x, so neighbouring points' labels do not sit on each other."""
    positions = ["bottom center"] * len(x)
    for rank, i in enumerate(np.argsort(x, kind="stable")):
        positions[i] = "top center" if rank % 2 else "bottom center"
    return positions


def biplot(
    projections: pd.DataFrame,
    loadings: pd.DataFrame,
    pcs: tuple[str, str] = ("PC1", "PC2"),
    labels: list[str] | None = None,
    *,
    axis_titles: tuple[str, str] | None = None,
    title: str = "Adapters and targets on two components",
) -> go.Figure:
    """Adapters (rows of `projections`) as labelled points; targets (rows of `loadings`) as arrows.

    Arrows are scaled by one common factor so the longest reaches 90% of the largest |projection|;
    hover on an arrow tip shows the unscaled loadings. `labels` overrides the point labels.
    """
    a, b = pcs
    px, py = projections[a].to_numpy(float), projections[b].to_numpy(float)
    lx, ly = loadings[a].to_numpy(float), loadings[b].to_numpy(float)
    reach = float(np.nanmax(np.abs(np.concatenate([px, py])))) if len(px) else 1.0
    longest = float(np.nanmax(np.hypot(lx, ly))) if len(lx) else 1.0
    scale = 0.9 * (reach or 1.0) / (longest or 1.0)
    raw_names = list(labels if labels is not None else projections.index)
    names, targets = escape_all(raw_names), escape_all(loadings.index)
    fig = go.Figure()
    fig.update_layout(annotations=[_arrow(x1, y1) for x1, y1 in zip(lx * scale, ly * scale, strict=True)])
    fig.add_scatter(
        x=lx * scale,
        y=ly * scale,
        mode="text",
        text=[esc(short(t, 20)) for t in loadings.index],
        hovertext=targets,
        textposition="top center",
        name="targets",
        textfont=dict(color="#6e7781", size=12),
        customdata=np.stack([lx, ly], axis=1),
        hovertemplate=f"target %{{hovertext}}<br>loading {esc(a)}: %{{customdata[0]:.4f}}"
        f"<br>loading {esc(b)}: %{{customdata[1]:.4f}}<extra></extra>",
    )
    fig.add_scatter(
        x=px,
        y=py,
        mode="markers+text",
        text=[esc(short(n, 20)) for n in raw_names],
        hovertext=names,
        textposition=_alternating_positions(px),
        name="adapters",
        marker=dict(size=11, color=ACCENT, line=dict(color="white", width=1)),
        hovertemplate=f"%{{hovertext}}<br>{esc(a)}: %{{x:.4f}}<br>{esc(b)}: %{{y:.4f}}<extra></extra>",
    )
    xt, yt = axis_titles if axis_titles is not None else pcs
    # room for the labels around the outermost points and arrow tips
    span = 1.25 * max(reach or 1.0, 1e-12)
    fig.update_traces(cliponaxis=False)
    fig.update_xaxes(title_text=esc(xt), range=[-span, span], zeroline=True, zerolinecolor="#d0d7de")
    fig.update_yaxes(title_text=esc(yt), range=[-span, span], zeroline=True, zerolinecolor="#d0d7de")
    return finish(fig, title, 520, legend=dict(x=1.01, y=1))
