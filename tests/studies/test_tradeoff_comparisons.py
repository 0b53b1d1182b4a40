"""The tradeoff study's paired comparisons on hand-written per-row scores (vs base, same learning rate,
matched domain score) and the default general text of ΔCL_general."""

from __future__ import annotations

import pandas as pd
import pytest
from tests.studies.evidence_support import COLUMNS, fake_results
from tests.studies.test_tradeoff_study import tradeoff_file  # noqa: F401 - fixture

from spillover.studies.run import load_study, prepare
from spillover.studies.tradeoff.comparisons import comparisons
from spillover.studies.tradeoff.plan import run_label

ROWS = [0, 1, 0, 1]
TALR_HIGH = run_label("toy_math", "target", "talr", 0.03)
DOMAIN_SCORE = {("ce", 0.001): 0.25, ("ce", 0.03): 0.75, ("talr", 0.001): 0.5, ("talr", 0.03): 1.0}


def _scores(job):
    if job.kind != "eval":
        return None
    if job.params.label == TALR_HIGH and job.params.target == "toy_a":
        return [1, 1, 1, 1]
    return ROWS


def _label(method: str, lr: float) -> str:
    return run_label("toy_math", "target", method, lr)


@pytest.fixture()
def two_methods(tradeoff_file):  # noqa: F811
    return load_study(
        tradeoff_file, ["methods=[{label: ce}, {label: talr, objective: talr}]", "formats=[target]"]
    )


def test_runs_vs_base_vs_each_other_and_at_matched_domain_score(two_methods, tmp_path):
    kind, spec = two_methods
    results = fake_results(kind, spec, tmp_path / "store", _scores)
    runs = pd.DataFrame([{"model": _label(m, lr), "domain_score": v} for (m, lr), v in DOMAIN_SCORE.items()])
    table, matched = comparisons(results, runs, ["toy_a", "toy_b"], tolerance=0.25)
    assert list(table.columns) == COLUMNS
    vs_base = table[table["b"] == "base"]
    assert len(vs_base) == 4 * 3  # 4 runs × (domain + 2 general tasks)
    between = table[(table["b"] != "base") & (table["target"] != "general")]
    same_lr = between[between["a"].str.contains("cross|ce") & between["b"].str.contains("talr")]
    assert len(same_lr) == 2 * 3 and set(same_lr["a"]) == {_label("ce", 0.001), _label("ce", 0.03)}
    # each method's neighbouring learning rates, the lower one as a, per target
    lrs = between.drop(same_lr.index)
    assert sorted(zip(lrs["a"], lrs["b"], strict=True)) == sorted(
        [(_label("ce", 0.001), _label("ce", 0.03))] * 3 + [(_label("talr", 0.001), TALR_HIGH)] * 3
    )
    planted_lr = lrs.set_index(["b", "target"]).loc[(TALR_HIGH, "toy_a")]  # 2 of 4 rows better at 0.03
    assert planted_lr["diff"] == -0.5 and planted_lr["n"] == 4
    # closest domain score; ties go to the lower learning rate; a pair found both ways is kept once
    pairs = list(zip(matched["a"], matched["b"], strict=True))
    assert pairs == [
        (_label("ce", 0.001), _label("talr", 0.001)),
        (_label("ce", 0.03), _label("talr", 0.001)),
        (_label("ce", 0.03), _label("talr", 0.03)),
    ]
    assert matched["domain_score_b"].tolist() == [0.5, 0.5, 1.0]
    general = table[table["target"] == "general"].set_index("b")
    assert len(general) == 3 and set(general["metric"]) == {"accuracy"} and (general["n"] == 8).all()
    planted = general.loc[TALR_HIGH]  # 2 of 8 pooled general rows better for talr: ce − talr = −0.25
    assert planted["diff"] == -0.25 and planted["p"] == pytest.approx(0.5) and not planted["significant"]
    same = table[table["diff"] == 0]
    assert (same["p"] == 1).all() and not same["significant"].any()
    # every matched pair here is 0.25 apart: at a tolerance of 0.2 they are listed, not compared
    narrow, listed = comparisons(results, runs, ["toy_a", "toy_b"], tolerance=0.2)
    assert len(listed) == 3 and not listed["matched"].any()
    assert not (narrow["target"] == "general").any() and len(narrow) == len(table) - 3


def test_code_length_defaults_to_general_text_not_label_tokens(tradeoff_file):  # noqa: F811
    kind, spec = load_study(tradeoff_file, ["codelength.tasks=null"])
    tasks, plan = prepare(kind, spec)
    assert spec.cl_general(tasks) == ["scitldr"]  # both general tasks are classification
    codelen = [j for j in plan.by_kind("codelen") if j.params.run is not None]
    assert {d.task for d in codelen[0].params.datasets} == {"toy_math", "scitldr"}
    kind, spec = load_study(tradeoff_file, ["codelength.tasks=null", "general=[toy_a, toy_gen]"])
    tasks, _ = prepare(kind, spec)
    assert spec.cl_general(tasks) == ["toy_gen"]  # a generation task among the general ones
