"""The report in a real headless Chromium: every figure draws, nothing errors, no injected script runs.

Needs a Chromium binary (Debian: `apt-get install chromium`); skipped with a reason when there is none.
Set SPILLOVER_REPORT_SCREENSHOT=/path/report.png to keep a full-page screenshot for a look by eye.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from browser import Chromium, find_chromium, open_page
from sample_report import IMG_PAYLOAD, N_FIGURES, SCRIPT_PAYLOAD, SETTINGS, sample_sections

from spillover.report.html import render_report, write_report

CHROMIUM = find_chromium()
# integration tier: a headless Chromium process per module (~6-9 s of start-up each)
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        CHROMIUM is None, reason="no chromium binary on PATH (Debian: apt-get install chromium)"
    ),
]

ALL_DRAWN = "[...document.querySelectorAll('div.plot')].every(d => d.querySelector('.main-svg'))"
CHECKS = {
    "pwned": "typeof window.__pwned",
    "plots": "document.querySelectorAll('div.plot').length",
    "drawn": "[...document.querySelectorAll('div.plot')].filter(d => d.querySelector('.main-svg')).length",
    "plot_heights": "[...document.querySelectorAll('div.plot')].map(d => d.getBoundingClientRect().height)",
    "scripts": "document.scripts.length",
    "images": "document.images.length",
    "text": "document.body.innerText",
    "svg_text": "[...document.querySelectorAll('.main-svg text')].map(t => t.textContent).join('\\n')",
}


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory):
    """Render the sample report with hostile labels, open it from file:// and collect what happened."""
    path = tmp_path_factory.mktemp("report") / "report.html"
    write_report(path, render_report(f"Transfer {SCRIPT_PAYLOAD}", sample_sections(), SETTINGS, footer="f"))
    shot = os.environ.get("SPILLOVER_REPORT_SCREENSHOT")
    with Chromium(CHROMIUM, timeout=20.0) as browser:
        result = open_page(
            browser, path.as_uri(), ready=ALL_DRAWN, checks=CHECKS, screenshot=Path(shot) if shot else None
        )
    return result


def test_every_figure_is_drawn(page) -> None:
    assert page.ready, "not every figure drew within the time limit"
    assert page.values["plots"] == page.values["drawn"] == N_FIGURES
    assert all(h > 200 for h in page.values["plot_heights"])


def test_no_console_errors_or_exceptions(page) -> None:
    assert page.console_errors == [] and page.exceptions == [] and page.log_errors == []


def test_no_injected_script_runs_and_payloads_show_as_text(page) -> None:
    assert page.values["pwned"] == "undefined"
    assert page.values["images"] == 0
    assert page.values["scripts"] == N_FIGURES + 1  # the plotly bundle and one newPlot per figure
    assert SCRIPT_PAYLOAD in page.values["text"] and IMG_PAYLOAD in page.values["text"]
    assert "<img src=x onerror=" in page.values["svg_text"]  # a heatmap tick label, shown literally


def test_nothing_is_fetched_from_the_network(page) -> None:
    assert page.requests and all(url.startswith(("file:", "data:", "blob:")) for url in page.requests)
