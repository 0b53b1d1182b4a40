"""report.plots: figure structure, hand-computed values (OLS, colour ranges, arrow scaling) and label escaping."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from spillover.report import plots

PAYLOAD = "<script>alert(1)</script>"


def _matrix() -> pd.DataFrame:
    return pd.DataFrame([[0.5, -0.1], [np.nan, 0.3]], index=["a", "b"], columns=["t1", "t2"])


def test_heatmap_sequential_annotates_cells_and_marks_nan() -> None:
    fig = plots.heatmap(_matrix(), "M", diverging=False)
    (trace,) = fig.data
    assert [list(row) for row in trace.text] == [["0.50", "-0.10"], ["–", "0.30"]]
    assert trace.z[1][0] is None
    assert fig.layout.coloraxis.cmin == pytest.approx(-0.1)
    assert fig.layout.coloraxis.cmax == pytest.approx(0.5)
    assert fig.layout.yaxis.autorange == "reversed"  # first row on top
    assert fig.layout.height > 0 and fig.layout.title.text == "M"


def test_heatmap_diverging_is_symmetric_about_zmid() -> None:
    fig = plots.heatmap(_matrix(), "Δ", diverging=True, fmt=".1f")
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == pytest.approx((-0.5, 0.5))
    assert fig.layout.coloraxis.colorscale[0][1] != fig.layout.coloraxis.colorscale[-1][1]
    shifted = plots.heatmap(_matrix(), "Δ", diverging=True, zmid=0.2)
    # largest distance from 0.2 is |−0.1 − 0.2| = 0.3 → [−0.1, 0.5]
    assert (shifted.layout.coloraxis.cmin, shifted.layout.coloraxis.cmax) == pytest.approx((-0.1, 0.5))


def test_heatmap_base_row_is_a_separate_top_panel() -> None:
    base = pd.Series({"t2": 0.9, "t1": 0.2})  # reordered to the frame's columns
    seq = plots.heatmap(_matrix(), "M", diverging=False, base_row=base, base_label="base model")
    top, main = seq.data
    assert top.y == ("base model",) and [list(row) for row in top.z] == [[0.2, 0.9]]
    assert top.coloraxis == main.coloraxis == "coloraxis"  # same scale for scores
    assert seq.layout.coloraxis.cmax == pytest.approx(0.9)  # range includes the base row
    assert seq.layout.yaxis.domain[0] > seq.layout.yaxis2.domain[1]  # a gap between the panels
    div = plots.heatmap(_matrix(), "Δ", diverging=True, base_row=base)
    assert div.data[0].coloraxis == "coloraxis2" and div.layout.coloraxis2.showscale is False


def test_heatmap_labels_are_escaped_and_long_ticks_cut() -> None:
    long = "x" * 60
    frame = pd.DataFrame([[1.0, 2.0]], index=[PAYLOAD], columns=[f"<b>{long}</b>", "ok"])
    fig = plots.heatmap(frame, f"title {PAYLOAD}", diverging=False)
    assert fig.data[0].y == ("&lt;script&gt;alert(1)&lt;/script&gt;",)
    assert fig.data[0].x[0] == f"&lt;b&gt;{long}&lt;/b&gt;"  # hover keeps the whole name
    assert fig.layout.xaxis.ticktext[0].endswith("…") and len(fig.layout.xaxis.ticktext[0]) < 40
    assert fig.layout.title.text == "title &lt;script&gt;alert(1)&lt;/script&gt;"
    assert PAYLOAD not in fig.to_json() and "<b>x" not in fig.to_json()


def test_scree_bars_and_cumulative_line() -> None:
    fig = plots.scree([0.5, 0.3, 0.2], [0.5, 0.8, 1.0])
    bar, line = fig.data
    assert bar.type == "bar" and list(bar.y) == [0.5, 0.3, 0.2] and list(bar.x) == ["PC1", "PC2", "PC3"]
    assert line.type == "scatter" and list(line.y) == [0.5, 0.8, 1.0]
    assert bar.text == ("50%", "30%", "20%")


def test_biplot_scales_arrows_to_the_projection_range() -> None:
    proj = pd.DataFrame({"PC1": [2.0, -1.0], "PC2": [0.5, 1.0]}, index=["ad1", PAYLOAD])
    load = pd.DataFrame({"PC1": [0.6, 0.0], "PC2": [0.8, 0.5]}, index=["t1", "t2"])
    fig = plots.biplot(proj, load)
    arrows = fig.layout.annotations
    assert len(arrows) == 2 and all(a.ax == 0 and a.ay == 0 for a in arrows)
    # longest loading |(0.6, 0.8)| = 1 → 0.9 × max|projection| = 1.8
    assert math.hypot(arrows[0].x, arrows[0].y) == pytest.approx(1.8)
    assert arrows[1].y == pytest.approx(0.5 * 1.8)
    tips, points = fig.data
    assert tips.customdata[0] == pytest.approx((0.6, 0.8))  # hover shows unscaled loadings
    assert points.hovertext[1] == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert fig.layout.xaxis.title.text == "PC1"


def test_ols_line_matches_hand_computation() -> None:
    slope, intercept, r = plots.ols_line([0, 1, 2, np.nan], [1, 3, 5, 7])
    assert (slope, intercept, r) == pytest.approx((2.0, 1.0, 1.0))
    # x = 0,1,2,3; y = 0,2,1,3: slope = Σ(x−1.5)(y−1.5)/Σ(x−1.5)² = 4/5; r = 4/5
    slope, intercept, r = plots.ols_line([0, 1, 2, 3], [0, 2, 1, 3])
    assert (slope, intercept, r) == pytest.approx((0.8, 0.3, 0.8))
    assert plots.ols_line([1, 1], [0, 2]) is None and plots.ols_line([1], [1]) is None


def test_scatter_trendline_spans_the_x_range() -> None:
    frame = pd.DataFrame({"sim": [0.0, 1.0, 2.0], "delta": [1.0, 3.0, 5.0], "pair": ["a", "b", PAYLOAD]})
    fig = plots.scatter(frame, "sim", "delta", text="pair", title="T", trendline=True)
    points, line = fig.data
    assert list(line.x) == [0.0, 2.0] and list(line.y) == pytest.approx([1.0, 5.0])
    assert points.hovertext[2] == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert points.text[2] == "&lt;script&gt;alert(1)&lt;/scrip…"  # cut to 24 characters, then escaped
    assert len(plots.scatter(frame, "sim", "delta", trendline=False).data) == 1


def test_bars_and_lines_group_by_colour() -> None:
    frame = pd.DataFrame({"step": [2, 1, 2, 1], "score": [0.2, 0.1, 0.4, 0.3], "task": ["a", "a", "b", "b"]})
    fig = plots.bars(frame, "task", "score", color="step", title="B")
    assert len(fig.data) == 2 and fig.layout.barmode == "group"
    curves = plots.lines(frame, "step", "score", color="task", title="L", log_x=True)
    assert [t.name for t in curves.data] == ["a", "b"]
    assert list(curves.data[0].x) == [1, 2] and list(curves.data[0].y) == [0.1, 0.2]  # sorted by x
    assert curves.layout.xaxis.type == "log"


def test_histogram_counts_with_numpy_bins() -> None:
    fig = plots.histogram([0, 1, 1, 2, 3, np.nan], bins=[0, 1, 2, 4], title="H")
    (bar,) = fig.data
    assert list(bar.y) == [1, 2, 2] and list(bar.x) == [0.5, 1.5, 3.0] and list(bar.width) == [1, 1, 2]


def test_pareto_draws_frontier_in_x_order_and_marks_the_base() -> None:
    frame = pd.DataFrame({"f": [0.3, 0.1, 0.2], "g": [0.9, 0.2, 0.5], "m": ["a", "b", "a"]})
    fig = plots.pareto(frame, "f", "g", color="m", frontier=frame.iloc[[0, 1]], marker=(0.0, 0.0), title="P")
    names = [t.name for t in fig.data]
    assert names == ["a", "b", "Pareto frontier", "base"]
    assert list(fig.data[2].x) == [0.1, 0.3]
    assert fig.data[3].marker.symbol == "star"


@pytest.mark.parametrize(
    "fig",
    [
        plots.heatmap(_matrix(), "M", diverging=False),
        plots.scree([1.0], [1.0]),
        plots.histogram([1, 2, 3], 3, "H"),
        plots.bars(pd.DataFrame({"a": ["x"], "b": [1]}), "a", "b", title="B"),
    ],
)
def test_every_figure_uses_the_house_template(fig) -> None:
    assert fig.layout.template.layout.font.family == plots.FONT
    assert fig.layout.height is not None
    assert fig.layout.title.xref == "container" or fig.layout.template.layout.title.xref == "container"
