"""One self-contained, offline HTML report: sections of text, plotly figures and tables.

`render_report` returns a single document with the plotly.js bundle inlined exactly once, each figure as
a `<div>` plus one tiny `Plotly.newPlot` script, a sticky table of contents, escaped tables and notes, and
a collapsible block with the run settings. Nothing is fetched from the network: no CDN, no fonts, and a
Content-Security-Policy that allows only the report's own scripts (by SHA-256 hash) and no connections.

Safety: every piece of text (titles, intros, captions, cells, notes, settings, footer) goes through
`html.escape`; figure JSON has `<`, `>`, `&`, U+2028 and U+2029 written as JSON `\\u` escapes (`<` becomes
`\\u003c`), so data containing `</script>` cannot end the script element. Figure label text is escaped
by `report.plots`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import yaml
from plotly.offline import get_plotlyjs

from spillover.atomic import atomic_write_text
from spillover.report.tables import table_html

PLOT_CONFIG = {"responsive": True, "displaylogo": False, "modeBarButtonsToRemove": ["lasso2d", "select2d"]}
DEFAULT_HEIGHT = 450  # plotly's own default
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


@dataclass
class Section:
    """One report section. `intro` and `notes` are plain text (escaped; blank lines split paragraphs)."""

    id: str
    title: str
    intro: str = ""
    figures: list[go.Figure] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    subsections: list[Section] = field(default_factory=list)
    columns: int = 1  # figures per row on wide screens
    coloured: list[ColouredText] = field(default_factory=list)


@dataclass
class ColouredText:
    """Text shown token by token, each token's background shaded by a value in [0, 1] (e.g. its probability:
    0 = full colour, 1 = none), the value in the token's tooltip. Tokens are escaped: data stays inert text."""

    caption: str
    tokens: list[str]
    values: list[float]


def coloured_html(block: ColouredText) -> str:
    spans = []
    for token, value in zip(block.tokens, block.values, strict=True):
        shade = min(max(1.0 - float(value), 0.0), 1.0)
        spans.append(
            f'<span style="background:rgba(207,34,46,{shade:.2f})" title="p = {float(value):.4g}">'
            f"{html.escape(token)}</span>"
        )
    return (
        f'<figure class="coloured"><figcaption>{html.escape(block.caption)}</figcaption>'
        f'<div style="white-space:pre-wrap;font-family:monospace;line-height:1.6">{"".join(spans)}</div></figure>'
    )


def script_safe_json(text: str) -> str:
    """JSON text that is still valid JSON/JS but can never close a `<script>` element or open a comment."""
    return re.sub("[<>&\u2028\u2029]", lambda m: _JSON_ESCAPES[m.group(0)], text)


def figure_script(fig: go.Figure, div_id: str) -> str:
    """The JavaScript (no tags) that draws `fig` into the element with id `div_id`."""
    spec = json.loads(fig.to_json())
    spec["config"] = PLOT_CONFIG
    payload = script_safe_json(json.dumps(spec, separators=(",", ":"), ensure_ascii=False))
    return f"Plotly.newPlot({json.dumps(div_id)},{payload});"


class _Builder:
    """Accumulates body HTML, inline scripts (for CSP hashes) and unique ids while rendering."""

    def __init__(self) -> None:
        self.scripts: list[str] = []
        self.ids: set[str] = set()
        self.n_figures = 0

    def script(self, code: str) -> str:
        self.scripts.append(code)
        return f"<script>{code}</script>"

    def unique_id(self, raw: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_-]+", "-", raw).strip("-") or "section"
        candidate, n = base, 1
        while candidate in self.ids:
            n += 1
            candidate = f"{base}-{n}"
        self.ids.add(candidate)
        return candidate


def _paragraphs(text: str) -> str:
    blocks = [b.strip() for b in re.split(r"\n\s*\n", text) if b.strip()]
    return "".join(f"<p>{html.escape(b)}</p>" for b in blocks)


def _figures(section: Section, b: _Builder) -> str:
    if not section.figures:
        return ""
    cells = []
    for fig in section.figures:
        b.n_figures += 1
        div_id = f"fig-{b.n_figures}"
        # An explicit height keeps responsive plots from collapsing to the div's auto height on resize.
        height = int(fig.layout.height or DEFAULT_HEIGHT)
        cells.append(
            f'<div class="figure"><div class="plot" id="{div_id}" style="height:{height}px"></div>'
            f"{b.script(figure_script(fig, div_id))}</div>"
        )
    cols = max(1, int(section.columns))
    return f'<div class="figures" style="--cols:{cols}">{"".join(cells)}</div>'


def _section(section: Section, b: _Builder, level: int, anchors: dict[int, str]) -> str:
    sid = b.unique_id(section.id)
    anchors[id(section)] = sid
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in section.notes)
    parts = [
        f'<section id="{sid}" class="level-{level}"><h{level}>{html.escape(section.title)}</h{level}>',
        f'<div class="intro">{_paragraphs(section.intro)}</div>' if section.intro.strip() else "",
        _figures(section, b),
        "".join(coloured_html(block) for block in section.coloured),
        "".join(table_html(caption, frame) for caption, frame in section.tables),
        f'<ul class="notes">{notes}</ul>' if notes else "",
        "".join(_section(sub, b, min(level + 1, 4), anchors) for sub in section.subsections),
        "</section>",
    ]
    return "".join(parts)


def _toc_items(sections: list[Section], anchors: dict[int, str]) -> str:
    items = []
    for s in sections:
        sub = f"<ul>{_toc_items(s.subsections, anchors)}</ul>" if s.subsections else ""
        items.append(f'<li><a href="#{anchors[id(s)]}">{html.escape(s.title)}</a>{sub}</li>')
    return "".join(items)


def settings_text(settings: dict) -> str:
    """The settings as YAML; values YAML cannot represent (paths, numpy scalars) become strings."""
    plain = json.loads(json.dumps(settings, default=str))
    return yaml.safe_dump(plain, sort_keys=False, allow_unicode=True, default_flow_style=False)


@lru_cache(maxsize=1)
def _css() -> str:
    return (files("spillover.report") / "templates" / "report.css").read_text(encoding="utf-8")


def _csp(scripts: list[str]) -> str:
    """The policy (only base64 hashes and fixed words, so it needs no escaping inside content="...")."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode('utf-8')).digest()).decode()}'" for s in scripts
    )
    return (
        # only the report's own scripts run (by hash); eval stays allowed for plotly trace types that use it
        f"default-src 'none'; script-src {hashes} 'unsafe-eval'; style-src 'unsafe-inline'; "
        "img-src data: blob:; font-src data:; connect-src 'none'; base-uri 'none'; form-action 'none'"
    )


def render_report(title: str, sections: list[Section], settings: dict, footer: str = "") -> str:
    """The whole report as one HTML string (see the module docstring for what it contains)."""
    b = _Builder()
    bundle = b.script(get_plotlyjs())
    anchors: dict[int, str] = {}
    body = "".join(_section(s, b, 2, anchors) for s in sections)
    settings_id = b.unique_id("run-settings")
    settings_block = (
        f'<section id="{settings_id}"><details class="settings"><summary>Run settings</summary>'
        f"<pre>{html.escape(settings_text(settings))}</pre></details></section>"
    )
    toc = f'<ul>{_toc_items(sections, anchors)}<li><a href="#{settings_id}">Run settings</a></li></ul>'
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_csp(b.scripts)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_css()}</style>{bundle}</head>"
        f'<body><nav class="toc" aria-label="Contents"><p class="toc-title">{html.escape(title)}</p>{toc}</nav>'
        f"<main><header><h1>{html.escape(title)}</h1></header>"
        '<noscript><p class="warn">The figures need JavaScript; tables and text are shown below.</p></noscript>'
        f"{body}{settings_block}<footer>{html.escape(footer)}</footer></main></body></html>\n"
    )


def write_report(path: str | Path, html_text: str) -> Path:
    """Write the report atomically (temporary file in the same folder, then rename). Returns the path."""
    target = Path(path)
    atomic_write_text(target, html_text)
    return target
