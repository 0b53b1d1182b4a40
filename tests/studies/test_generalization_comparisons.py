"""The generalization study's paired comparisons (tables/comparisons.csv) on hand-written per-row scores."""

from __future__ import annotations

import pytest
from tests.studies.evidence_support import COLUMNS, fake_results
from tests.studies.test_generalization_study import gen_study  # noqa: F401 - fixture

from spillover.studies.generalization.analysis import comparisons
from spillover.studies.run import load_study

BASE_ROWS = [0, 1, 0, 1]


def _scores(job):
    if job.kind != "eval":
        return None
    p = job.params
    if p.method == "fticl" and p.target == "toy_a" and p.shots == 0:
        return [1, 1, 1, 1]  # two rows better than the base (and than FT, which scores like the base)
    return BASE_ROWS


def test_comparisons_pair_every_cell_with_its_reference(gen_study, tmp_path):  # noqa: F811
    kind, spec = load_study(gen_study)
    table = comparisons(fake_results(kind, spec, tmp_path / "store", _scores))
    assert list(table.columns) == COLUMNS
    # per target: 8 models × 2 shot settings vs base, 4 FTICL models × 2 vs FT, 1 ICL (1-shot vs 0-shot)
    assert len(table) == 4 * (8 * 2 + 4 * 2 + 1)
    icl = table[(table["a"] == "base · 1-shot") & (table["b"] == "base · 0-shot")]
    assert sorted(icl["target"]) == ["toy_a", "toy_a2", "toy_b", "toy_gen"]
    assert set(table.loc[table["target"] == "toy_gen", "metric"]) == {"rouge_l"}
    same = table[table["diff"] == 0]
    assert (same["p"] == 1).all() and not same["significant"].any() and (same["n"] == 4).all()
    planted = table[(table["a"] == "toy_a · FTICL · n=16 · 0-shot") & (table["target"] == "toy_a")]
    assert set(planted["b"]) == {"base · 0-shot", "toy_a · FT · n=16 · 0-shot"}
    # 2 discordant rows, both for a: diff 0.5, exact McNemar p = 2 · 0.5² = 0.5
    assert planted["diff"].tolist() == [0.5, 0.5] and planted["p"].tolist() == pytest.approx([0.5, 0.5])
    assert not table["significant"].any() and (table["seeds"] == 1).all()


def test_report_marks_the_cells_and_counts_the_significant_ones(gen_study, tmp_path):  # noqa: F811
    from spillover.report.html import render_report
    from spillover.studies.generalization import analysis, sections

    kind, spec = load_study(gen_study)
    results = fake_results(kind, spec, tmp_path / "store", _scores)
    a = analysis.analyse(results, results.plan.by_kind("analyse")[0].params)
    assert a.tables["comparisons"].equals(comparisons(results))
    html = render_report("t", sections.sections(a, results), {})
    assert "Paired comparisons" in html and "0 of 100 cell comparisons are significant" in html
    assert "* = significant" in html
