"""The multitask study's paired comparisons on hand-written per-row scores: methods vs base, CPI-FT vs each
baseline, and the sequential test's ΔA / ΔB as paired comparisons."""

from __future__ import annotations

import pytest
from tests.studies.evidence_support import COLUMNS, fake_results
from tests.studies.test_multitask_study import write_multitask_study

from spillover.studies.multitask.analysis import comparisons
from spillover.studies.run import load_study

ROWS = [0, 1, 0, 1]


def _scores(job):
    if job.kind != "eval":
        return None
    label, target = job.params.label, job.params.target
    if (label, target) == ("cpi", "toy_a"):
        return [1, 1, 1, 1]
    if (label, target) == ("seq:sft:toy_a>toy_b", "toy_a"):
        return [0, 0, 0, 0]  # forgot A's two right rows
    return ROWS


def test_methods_cpi_and_sequential_deltas_are_paired(tmp_path, tiny_model_dir):
    kind, spec = load_study(write_multitask_study(tmp_path, tiny_model_dir))
    results = fake_results(kind, spec, tmp_path / "store", _scores)
    table = comparisons(results, results.plan.by_kind("analyse")[0].params)
    assert list(table.columns) == COLUMNS
    assert len(table) == 4 * 3 + 3 * 3 + 2 * (2 * 2 + 1)
    vs_base = table[table["b"] == "base"]
    assert set(vs_base["a"]) == {"joint", "multistage_random", "multistage_heuristic", "cpi"}
    assert len(table[(table["a"] == "cpi") & (table["b"] != "base")]) == 3 * 3
    rows = table.set_index(["a", "b", "target"])
    delta_a = rows.loc[("seq:sft:toy_a>toy_b", "single:toy_a", "toy_a")]
    assert delta_a["diff"] == -0.5 and delta_a["p"] == pytest.approx(0.5) and delta_a["n"] == 4
    assert rows.loc[("seq:cpi:toy_a>toy_b", "seq:sft:toy_a>toy_b", "toy_a"), "diff"] == 0.5
    assert rows.loc[("seq:cpi:toy_a>toy_b", "single:toy_a", "toy_b"), "diff"] == 0  # ΔB
    assert rows.loc[("cpi", "joint", "toy_a"), "diff"] == 0.5
    assert set(table.loc[table["target"] == "toy_gen", "metric"]) == {"rouge_l"}
    same = table[table["diff"] == 0]
    assert (same["p"] == 1).all() and not table["significant"].any()


def test_report_says_how_many_comparisons_are_significant(tmp_path, tiny_model_dir):
    from spillover.report.html import render_report
    from spillover.studies.multitask import analysis, sections

    kind, spec = load_study(write_multitask_study(tmp_path, tiny_model_dir))
    results = fake_results(kind, spec, tmp_path / "store", _scores)
    a = analysis.analyse(results, results.plan.by_kind("analyse")[0].params)
    html = render_report("t", sections.sections(a, results), {})
    assert "Paired comparisons" in html and "0 of 31 comparisons are significant" in html
