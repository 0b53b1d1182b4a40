"""report.html and report.tables: one bundle, one div + newPlot per figure, escaping everywhere, formatting."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

from spillover.report import plots
from spillover.report.html import Section, render_report, script_safe_json, settings_text, write_report
from spillover.report.tables import format_float, format_value, table_html

SCRIPT = "<script>alert(1)</script>"
IMG = '<img src=x onerror="alert(1)">'
BUNDLE = get_plotlyjs()


def _hostile_report() -> tuple[str, int]:
    frame = pd.DataFrame({"task": [SCRIPT, IMG], "score": [0.5, np.nan]})
    heat = pd.DataFrame([[0.1, 0.2]], index=[IMG], columns=[SCRIPT, "ok"])
    figures = [plots.heatmap(heat, f"Δ {SCRIPT}", diverging=True), plots.scree([0.6, 0.4], [0.6, 1.0])]
    sub = Section(id="sub", title=f"Sub {IMG}", figures=[plots.histogram([1, 2, 2], 2, "H")])
    sections = [
        Section(
            id="one",
            title=f"One {SCRIPT}",
            intro=f"Intro {IMG}\n\nSecond paragraph",
            figures=figures,
            tables=[(f"Caption {SCRIPT}", frame)],
            notes=[f"note {IMG}"],
            subsections=[sub],
        ),
    ]
    settings = {"task": SCRIPT, "path": Path("/x/y"), "lr": np.float64(1e-4), "nested": {"k": [IMG]}}
    return render_report(f"Report {SCRIPT}", sections, settings, footer=f"footer {IMG}"), 3


def _outside_bundle(doc: str) -> str:
    assert doc.count(BUNDLE) == 1
    return doc.replace(BUNDLE, "")


def test_plotly_bundle_is_inlined_exactly_once() -> None:
    doc, n_figures = _hostile_report()
    rest = _outside_bundle(doc)
    assert "plotly.js v" not in rest
    assert rest.count("<script>") == rest.count("</script>") == n_figures + 1


def test_every_figure_has_a_div_and_a_newplot_call() -> None:
    doc, n_figures = _hostile_report()
    for i in range(1, n_figures + 1):
        assert f'id="fig-{i}"' in doc
        assert f'Plotly.newPlot("fig-{i}",' in doc
    assert doc.count("Plotly.newPlot(") == n_figures + BUNDLE.count("Plotly.newPlot(")


def test_hostile_text_appears_only_escaped() -> None:
    doc, _ = _hostile_report()
    rest = _outside_bundle(doc)
    # drop the report's own script elements (the emptied bundle and the newPlot calls): nothing else may remain
    markup = re.sub(r"<script>(Plotly\.newPlot\(.*?)?</script>", "", rest, flags=re.S)
    for raw in ("<script", "</script", "<img", 'onerror="', "alert(1)</"):
        assert raw not in markup
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    for where in ("<title>Report ", "<h2>One ", "<figcaption>Caption ", "<td>", "<pre>task: "):
        assert where + escaped in markup
    # h3, toc entry, intro, table cell, note, settings, footer
    assert markup.count("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;") == 7
    assert "  - &lt;img src=x onerror=&quot;alert(1)&quot;&gt;\n" in markup  # inside the settings <pre>


def test_figure_json_cannot_close_its_script_element() -> None:
    doc, _ = _hostile_report()
    scripts = re.findall(r"<script>(Plotly\.newPlot.*?)</script>", _outside_bundle(doc), flags=re.S)
    assert len(scripts) == 3
    for code in scripts:
        assert "<" not in code and ">" not in code and "&" not in code
    # the task name, escaped for plotly's label markup (&lt;), then for the script element (\u0026)
    assert "\\u0026lt;script\\u0026gt;alert(1)" in scripts[0]


def test_script_safe_json_round_trips() -> None:
    original = json.dumps({"a": "</script><!-- & \u2028 \u2029 >", "b": [1.5, None]}, ensure_ascii=False)
    safe = script_safe_json(original)
    assert not set("<>&\u2028\u2029") & set(safe)
    assert json.loads(safe) == json.loads(original)


def test_csp_allows_exactly_the_reports_own_scripts_and_no_network() -> None:
    doc, n_figures = _hostile_report()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', doc).group(1)
    scripts = re.findall(r"<script>(.*?)</script>", doc, flags=re.S)
    assert len(scripts) == n_figures + 1
    for code in scripts:
        digest = base64.b64encode(hashlib.sha256(code.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp
    assert "default-src 'none'" in csp and "connect-src 'none'" in csp and "unsafe-inline' ;" not in csp
    rest = _outside_bundle(doc)
    assert not re.search(r"(src|href)=\"(https?:)?//", rest)  # no external resources at all


def test_toc_links_every_section_and_ids_are_safe_and_unique() -> None:
    sections = [
        Section(id='a b"<x>', title="A"),
        Section(id='a b"<x>', title="B", subsections=[Section(id="", title="C")]),
    ]
    doc = render_report("R", sections, {})
    assert re.findall(r'<section id="([^"]*)"', doc) == ["a-b-x", "a-b-x-2", "section", "run-settings"]
    for anchor in ("a-b-x", "a-b-x-2", "section", "run-settings"):
        assert f'href="#{anchor}"' in doc
    assert 'class="toc"' in doc and "<details" in doc


def test_settings_serialise_paths_and_numpy_values() -> None:
    text = settings_text({"p": Path("/a"), "x": np.float64(0.5), "n": np.int64(3), "l": [1, "b"]})
    assert "p: /a" in text and "x: '0.5'" in text or "x: 0.5" in text
    assert "- b" in text


def test_nan_and_numbers_are_formatted_for_reading() -> None:
    cases = {
        0.0123456: "0.0123",
        0.5: "0.500",
        1.5: "1.50",
        -12.345: "-12.3",
        123.456: "123",
        1234.6: "1,235",
        0.0: "0",
        1e-5: "1.00e-05",
        2.5e6: "2.50e+06",
        float("inf"): "∞",
    }
    for value, text in cases.items():
        assert format_float(value) == text
    assert format_value(np.nan) == format_value(None) == format_value(pd.NA) == "–"
    assert format_value(np.int64(7)) == "7" and format_value(True) == "True" and format_value("x") == "x"


def test_table_formats_columns_and_escapes_cells() -> None:
    frame = pd.DataFrame({"name": [SCRIPT, "b"], "delta": [0.0123456, np.nan], "count": [3.0, np.nan]})
    out = table_html(f"cap {SCRIPT}", frame)
    assert "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>" in out
    assert '<td class="num">0.0123</td>' in out and '<td class="num">–</td>' in out
    assert '<td class="num">3</td>' in out  # whole-number float column shown as integers
    assert "<th" in out and 'scope="row"' not in out  # default RangeIndex is not shown
    indexed = table_html("c", frame.set_index("name"))
    assert '<th scope="row">&lt;script&gt;alert(1)&lt;/script&gt;</th>' in indexed


def test_long_tables_are_cut_with_a_note() -> None:
    out = table_html("c", pd.DataFrame({"x": range(10)}), max_rows=4)
    assert out.count("<tr>") == 5 and "first 4 of 10 rows" in out


def test_write_report_is_atomic_and_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "out" / "report.html"
    assert write_report(target, "old") == target
    write_report(target, render_report("R", [], {}))
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]
    assert target.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("columns", [1, 2])
def test_section_columns_set_the_figure_grid(columns: int) -> None:
    doc = render_report(
        "R", [Section(id="s", title="S", figures=[plots.scree([1.0], [1.0])], columns=columns)], {}
    )
    assert f'style="--cols:{columns}"' in doc


def test_rendering_is_deterministic() -> None:
    first, _ = _hostile_report()
    second, _ = _hostile_report()
    assert first == second  # no timestamps or random ids: reruns of a cached study give the same file


def test_coloured_tokens_are_escaped_and_shaded():
    from spillover.report.html import ColouredText, Section, render_report

    block = ColouredText("ex <1>", ["<script>alert(1)</script>", " ok"], [0.0, 1.0])
    page = render_report("t", [Section("s", "S", coloured=[block])], {})
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    assert "rgba(207,34,46,1.00)" in page and "rgba(207,34,46,0.00)" in page
    assert "ex &lt;1&gt;" in page and 'title="p = 0"' in page
