"""Plotly figures for the HTML report: pure functions from tables to `go.Figure`s, one house style.

Every figure uses the template in `report.style` (plotly_white, system fonts, fixed height, a
left-aligned title above the plot area so it never collides with legends or colour bars) and shows exact
values on hover. Data text (task and adapter names, point labels, titles) is escaped for plotly's label
markup by `style.esc`; `report.html` separately makes the figure JSON safe inside `<script>`.

This module is the one to import: the matrix figures (`heatmap`, `scree`, `biplot`) live in
`report.matrix_plots` and are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from spillover.report.matrix_plots import biplot, heatmap, scree
from spillover.report.style import ACCENT, FONT, HEIGHT, INK, TEMPLATE, esc, escape_all, finish, short

__all__ = [
    "FONT",
    "TEMPLATE",
    "bars",
    "biplot",
    "esc",
    "heatmap",
    "histogram",
    "lines",
    "ols_line",
    "pareto",
    "scatter",
    "scree",
]


def ols_line(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float] | None:
    """Least-squares fit y ≈ slope·x + intercept on the finite pairs: (slope, intercept, Pearson r).

    None when fewer than two finite pairs or x is constant; r is NaN when y is constant.
    """
    xs, ys = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    if xs.size < 2 or np.ptp(xs) == 0:
        return None
    slope, intercept = np.polyfit(xs, ys, 1)
    r = float(np.corrcoef(xs, ys)[0, 1]) if np.ptp(ys) > 0 else math.nan
    return float(slope), float(intercept), r


def scatter(
    frame: pd.DataFrame,
    x: str,
    y: str,
    text: str | None = None,
    title: str = "",
    *,
    trendline: bool = True,
    color: str | None = None,
) -> go.Figure:
    """Points of `frame[y]` against `frame[x]`, optional point labels, and an OLS line (numpy) with r."""
    fig = go.Figure()
    groups = [(None, frame)] if color is None else list(frame.groupby(color, sort=False))
    for key, part in groups:
        labels = [esc(short(t, 24)) for t in part[text]] if text else None
        fig.add_scatter(
            x=part[x],
            y=part[y],
            mode="markers+text" if text else "markers",
            text=labels,
            hovertext=escape_all(part[text]) if text else None,
            cliponaxis=False,
            textposition="top center",
            textfont=dict(size=11, color="#57606a"),
            name=esc(key) if key is not None else esc(y),
            showlegend=key is not None,
            marker=dict(size=10, opacity=0.85, line=dict(color="white", width=1)),
            hovertemplate=(
                ("%{hovertext}<br>" if text else "") + f"{esc(x)}: %{{x:.6g}}<br>{esc(y)}: %{{y:.6g}}"
                "<extra></extra>"
            ),
        )
    fit = ols_line(frame[x], frame[y]) if trendline else None
    if fit is not None:
        slope, intercept, r = fit
        xs = np.array([np.nanmin(frame[x].to_numpy(float)), np.nanmax(frame[x].to_numpy(float))])
        fig.add_scatter(
            x=xs,
            y=slope * xs + intercept,
            mode="lines",
            line=dict(color=INK, dash="dash", width=1.5),
            name=f"OLS: slope {slope:.3g}, r = {r:.2f}",
            showlegend=True,
            hovertemplate=f"y = {slope:.4g}·x + {intercept:.4g}<br>r = {r:.3f}<extra></extra>",
        )
    fig.update_xaxes(title_text=esc(x))
    fig.update_yaxes(title_text=esc(y))
    return finish(fig, title, HEIGHT, legend=dict(x=1.01, y=1))


def bars(frame: pd.DataFrame, x: str, y: str, color: str | None = None, title: str = "") -> go.Figure:
    """Vertical bars of `frame[y]` per `frame[x]`; grouped side by side when `color` is given."""
    fig = go.Figure()
    groups = [(None, frame)] if color is None else list(frame.groupby(color, sort=False))
    for key, part in groups:
        fig.add_bar(
            x=escape_all(part[x]),
            y=part[y],
            name=esc(key) if key is not None else esc(y),
            marker_color=ACCENT if key is None else None,
            showlegend=key is not None,
            hovertemplate=f"%{{x}}<br>{esc(y)}: %{{y:.6g}}<extra>{esc(key) if key is not None else ''}</extra>",
        )
    fig.update_xaxes(title_text=esc(x), automargin=True, type="category")
    fig.update_yaxes(title_text=esc(y))
    return finish(fig, title, HEIGHT, barmode="group", legend=dict(x=1.01, y=1), bargap=0.25)


def lines(
    frame: pd.DataFrame,
    x: str,
    y: str,
    color: str | None = None,
    title: str = "",
    *,
    log_x: bool = False,
    ci: tuple[str, str] | None = None,
) -> go.Figure:
    """One line per `color` group of `frame[y]` against `frame[x]` (sorted by x), e.g. score vs step;
    `ci` = (low column, high column) draws each point's interval as asymmetric error bars."""
    fig = go.Figure()
    groups = [(None, frame)] if color is None else list(frame.groupby(color, sort=False))
    for key, part in groups:
        part = part.sort_values(x)
        fig.add_scatter(
            x=part[x],
            y=part[y],
            error_y=None if ci is None else error_bars(part, y, *ci),
            mode="lines+markers",
            name=esc(key) if key is not None else esc(y),
            showlegend=key is not None,
            marker=dict(size=6),
            hovertemplate=f"{esc(x)}: %{{x:.6g}}<br>{esc(y)}: %{{y:.6g}}<extra>"
            f"{esc(key) if key is not None else ''}</extra>",
        )
    fig.update_xaxes(title_text=esc(x), type="log" if log_x else None)
    fig.update_yaxes(title_text=esc(y))
    return finish(fig, title, HEIGHT, legend=dict(x=1.01, y=1))


def error_bars(frame: pd.DataFrame, y: str, low: str, high: str) -> dict:
    """Plotly asymmetric error bars from `frame[low]` to `frame[high]` around `frame[y]`."""
    return dict(
        type="data",
        symmetric=False,
        array=frame[high] - frame[y],
        arrayminus=frame[y] - frame[low],
        thickness=1,
        width=3,
    )


def histogram(
    values: Sequence[float], bins: int | Sequence[float] = 20, title: str = "", *, x_title: str = "value"
) -> go.Figure:
    """Histogram with bins computed by numpy (so hover shows each bin's exact range and count)."""
    data = np.asarray(values, float)
    data = data[np.isfinite(data)]
    counts, edges = np.histogram(data, bins=bins) if data.size else (np.zeros(0), np.zeros(1))
    fig = go.Figure()
    fig.add_bar(
        x=(edges[:-1] + edges[1:]) / 2,
        y=counts,
        width=np.diff(edges),
        marker_color=ACCENT,
        marker_line=dict(color="white", width=1),
        customdata=np.stack([edges[:-1], edges[1:]], axis=1),
        hovertemplate="[%{customdata[0]:.6g}, %{customdata[1]:.6g}): %{y}<extra></extra>",
        name="count",
    )
    fig.update_xaxes(title_text=esc(x_title))
    fig.update_yaxes(title_text="count")
    return finish(fig, title, 360, showlegend=False)


def pareto(
    frame: pd.DataFrame,
    x: str,
    y: str,
    color: str | None = None,
    frontier: pd.DataFrame | None = None,
    marker: tuple[float, float] | None = None,
    *,
    marker_label: str = "base",
    title: str = "",
    text: str | None = None,
) -> go.Figure:
    """Points (coloured by `color`, labelled by `text`), the Pareto frontier (rows of `frontier`, joined in
    x order) and a marked reference point `marker` = (x, y), e.g. the base model."""
    fig = scatter(frame, x, y, text=text, title=title, trendline=False, color=color)
    if frontier is not None and len(frontier):
        front = frontier.sort_values(x)
        fig.add_scatter(
            x=front[x],
            y=front[y],
            mode="lines",
            name="Pareto frontier",
            line=dict(color=INK, width=2),
            hoverinfo="skip",
        )
    if marker is not None:
        fig.add_scatter(
            x=[marker[0]],
            y=[marker[1]],
            mode="markers+text",
            name=esc(marker_label),
            text=[esc(marker_label)],
            textposition="bottom center",
            marker=dict(symbol="star", size=16, color="#cf222e"),
            hovertemplate=f"{esc(marker_label)}<br>{esc(x)}: %{{x:.6g}}<br>{esc(y)}: %{{y:.6g}}<extra></extra>",
        )
    return fig
