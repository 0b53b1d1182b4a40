"""A real (tiny) transfer study whose free-text inputs carry HTML/JS payloads — data rows (ids, inputs,
outputs), classification labels, task_type/domain/description, source row labels and component labels —
opened in headless Chromium: no script from the data runs, no element gets an event handler or a
`javascript:` URL, nothing is fetched, and the payload text is shown literally where it appears.

Needs a Chromium binary (Debian: `apt-get install chromium`); skipped with a reason when there is none,
like tests/report/test_report_browser.py, whose DevTools machinery (tests/report/browser.py) it reuses.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml
from tests.conftest import write_jsonl

from spillover.cli import main


def _load_browser():
    """tests/report/browser.py (not on sys.path from this folder)."""
    spec = importlib.util.spec_from_file_location(
        "report_browser", Path(__file__).parents[1] / "report" / "browser.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


browser = _load_browser()
CHROMIUM = browser.find_chromium()
# integration tier: a headless Chromium process per module (~6-9 s of start-up each)
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        CHROMIUM is None, reason="no chromium binary on PATH (Debian: apt-get install chromium)"
    ),
]

# each payload sets window.__pwned to its own number, so a failure says which one ran
SCRIPT = "<script>window.__pwned=1</script>"
IMG = '<img src=x onerror="window.__pwned=2">'
CLOSE = "</script><script>window.__pwned=3</script>"
JS_URL = "javascript:window.__pwned=4"
SVG = '"><svg onload=window.__pwned=5>'
LINK = f'<a href="{JS_URL}">click</a>'
SEPARATORS = "line\u2028separator\u2029paragraph"

LABELS = [f"neg {SCRIPT}", f"pos {IMG}"]  # classification labels: free text, scored and shown
SOURCE_LABEL = f"cls {SVG} {SEPARATORS}"  # a row of the transfer matrix
COMPONENT_LABEL = f"PC one {LINK}"

CHECKS = {
    "pwned": "String(window.__pwned)",
    "plots": "document.querySelectorAll('div.plot').length",
    "drawn": "[...document.querySelectorAll('div.plot')].filter(d => d.querySelector('.main-svg')).length",
    "scripts": "document.scripts.length",
    "external_scripts": "[...document.scripts].filter(s => s.src).length",
    "images": "document.images.length",
    "svg_elements_in_text": "document.querySelectorAll('main p svg, main td svg, main th svg, main pre svg').length",
    "handlers": "[...document.querySelectorAll('*')].flatMap(e => [...e.attributes])"
    ".filter(a => a.name.toLowerCase().startsWith('on')).map(a => a.name + '=' + a.value)",
    "js_urls": "[...document.querySelectorAll('[href],[src],[action],[formaction]')]"
    ".map(e => e.getAttribute('href') || e.getAttribute('src') || e.getAttribute('action') || '')"
    ".filter(u => u.trim().toLowerCase().startsWith('javascript:'))",
    "text": "document.body.innerText",
    "svg_text": "[...document.querySelectorAll('.main-svg text')].map(t => t.textContent).join('\\n')",
}


def write_hostile_study(folder: Path, model_dir: Path) -> Path:
    """Two tasks whose every free-text field carries payloads; two sources × two targets, 2 steps each."""
    payloads = [SCRIPT, IMG, CLOSE, JS_URL, SVG, LINK, SEPARATORS]
    cls = [
        {
            "id": f"{payloads[i % 7]}-{i}",
            "input": f"{'great' if i % 2 else 'awful'} {payloads[i % 7]}",
            "output": LABELS[i % 2],
        }
        for i in range(12)
    ]
    gen = [{"id": f"g{i} {SVG}", "input": f"say {p}", "output": p} for i, p in enumerate(payloads * 2)]
    for name, rows in (("cls", cls), ("gen", gen)):
        write_jsonl(folder / f"{name}_train.jsonl", rows, ensure_ascii=False)
        write_jsonl(folder / f"{name}_test.jsonl", rows[:6], ensure_ascii=False)
    tasks = {
        "tasks": [
            {
                "name": "evil_cls",
                "type": "classification",
                "train": "cls_train.jsonl",
                "test": "cls_test.jsonl",
                "labels": LABELS,
                "metric": "accuracy",
                "task_type": f"sentiment {IMG}",
                "domain": CLOSE,
                "description": SCRIPT,
                "instruction": f"Classify {SCRIPT}",
            },
            {
                "name": "evil_gen",
                "type": "generation",
                "train": "gen_train.jsonl",
                "test": "gen_test.jsonl",
                "metric": "rouge_l",
                "max_new_tokens": 4,
                "task_type": f"copy {SVG}",
            },
        ]
    }
    (folder / "tasks.yaml").write_text(yaml.safe_dump(tasks, allow_unicode=True), encoding="utf-8")
    study = {
        "study": "transfer",
        "model": str(model_dir),
        "tasks_file": "tasks.yaml",
        "output_dir": str(folder / "out"),
        "precision": "fp32",
        "sources": [{"task": "evil_cls", "label": SOURCE_LABEL}, {"task": "evil_gen"}],
        "targets": ["evil_cls", "evil_gen"],
        "train": {"limit": 8, "batch_size": 4, "max_steps": 2, "learning_rate": 0.01},
        "eval": {"limit": 6, "batch_size": 6},
        "stats": {"sample": 8},
        "analysis": {"component_labels": {"PC1": COMPONENT_LABEL}, "n_boot": 20},
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def page(tmp_path_factory, tiny_model_dir):
    """Run the hostile study through the CLI, open its report.html from file:// and collect what happened."""
    folder = tmp_path_factory.mktemp("hostile")
    study = write_hostile_study(folder, tiny_model_dir)
    assert main(["run", str(study), "--threads", "1"]) == 0
    report = folder / "out" / "report.html"
    with browser.Chromium(CHROMIUM, timeout=30.0) as chromium:
        result = browser.open_page(chromium, report.as_uri(), checks=CHECKS)
    result.values["html"] = report.read_text(encoding="utf-8")
    return result


def test_no_script_from_the_data_runs(page) -> None:
    assert page.ready
    assert page.values["pwned"] == "undefined"
    assert page.values["handlers"] == [] and page.values["js_urls"] == []
    assert page.values["images"] == 0 and page.values["svg_elements_in_text"] == 0
    # the only scripts: the inlined plotly bundle and one newPlot per figure
    assert page.values["external_scripts"] == 0
    assert page.values["plots"] == page.values["drawn"] > 0
    assert page.values["scripts"] == page.values["plots"] + 1


def test_no_errors_and_nothing_fetched(page) -> None:
    assert page.console_errors == [] and page.exceptions == [] and page.log_errors == []
    assert all(url.startswith(("file:", "data:", "blob:")) for url in page.requests)


def test_payloads_are_shown_as_text_where_they_appear(page) -> None:
    """Labels, task types and component labels reach the report (tables, tick labels, settings); the data
    rows' ids, inputs and outputs do not today, and if they ever do they must arrive escaped like these."""
    text, svg = page.values["text"], page.values["svg_text"]
    assert SVG in text and SVG in svg  # the source's row label: tables and heatmap ticks
    assert COMPONENT_LABEL in text  # the user's component label, in the traits tables
    assert f"sentiment {IMG}" in text  # a task_type, in the suggested component labels
    assert all(label in text for label in LABELS)  # class labels, in the dataset statistics
    raw = page.values["html"]
    for payload in (SCRIPT, IMG, SVG, LINK, *LABELS):
        assert payload not in raw, f"{payload!r} is in report.html unescaped"
