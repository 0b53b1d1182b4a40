"""The report's figure style: one plotly template, palette, fixed heights, and label escaping.

plotly.js renders label text through its own small markup language (`<b>`, `<br>`, `<a href>`, entities),
so every string that can come from data goes through `esc` (`html.escape(..., quote=False)`): plotly
decodes the entities back and shows the text literally; it can create neither markup nor links.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, 'Liberation Sans', sans-serif"
HEIGHT = 420
ACCENT, MUTED, INK = "#1f6feb", "#8b949e", "#24292f"
SEQUENTIAL, DIVERGING = "Blues", "RdBu"
COLORWAY = ["#1f6feb", "#e8590c", "#2f9e44", "#ae3ec9", "#f59f00", "#0c8599", "#c2255c", "#5c940d"]


def _template() -> go.layout.Template:
    """plotly_white with the report's fonts, margins and hover style."""
    tpl = go.layout.Template(pio.templates["plotly_white"])
    tpl.layout.update(
        font=dict(family=FONT, size=13, color=INK),
        title=dict(
            font=dict(size=16), x=0.012, xanchor="left", xref="container", y=1, yanchor="bottom", yref="paper"
        ),
        margin=dict(l=70, r=30, t=56, b=60),
        hoverlabel=dict(font=dict(family=FONT, size=13), bgcolor="white"),
        legend=dict(font=dict(size=12)),
        colorway=COLORWAY,
    )
    return tpl


TEMPLATE = _template()


def esc(value: object) -> str:
    """Escape one label for plotly's text markup (it decodes the entities and shows the text literally)."""
    return html.escape(str(value), quote=False)


def short(value: object, limit: int = 28) -> str:
    """`value` as text, cut to `limit` characters with an ellipsis (for tick and point labels)."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def escape_all(values: Sequence[object] | pd.Index | pd.Series) -> list:
    """Escape string labels; keep numbers numeric so numeric axes stay numeric."""
    return [
        v if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) else esc(v) for v in values
    ]


def finish(fig: go.Figure, title: str, height: int, **layout: object) -> go.Figure:
    """Apply the house template, an escaped title (above the plot area) and a fixed height."""
    fig.update_layout(template=TEMPLATE, height=height, **layout)
    fig.update_layout(
        title=dict(text=esc(title), automargin=True, pad=dict(b=10)) if title else dict(text="")
    )
    return fig
