"""The mixture study's paired probe comparisons on hand-written per-row probe scores: each checkpoint vs
step 0 and vs the previous probe, and the degradation point as the first checkpoint significantly below
step 0."""

from __future__ import annotations

import pandas as pd
import pytest
from tests.studies.evidence_support import COLUMNS, write_rows
from tests.studies.test_mixture_study import write_mixture_study

from spillover.report.html import render_report
from spillover.studies.contract import SCORE_COLUMNS, Results
from spillover.studies.mixture import analysis, sections
from spillover.studies.mixture.handlers import PROBES
from spillover.studies.run import load_study, prepare

TASKS = ["toy_a", "toy_b", "toy_gen"]


def _rows(label: str, step: int, task: str) -> list[int]:
    if task == "toy_a":  # right on every row until step 4, then wrong on every row
        return [0] * 8 if step == 4 else [1] * 8
    return [0, 1] * 4


def _probe(step: int, task: str) -> dict:
    score = float(pd.Series(_rows("", step, task)).mean())
    behaviour = {"char_length": {"mean": 3.0, "p90": 4.0}}
    return {"step": step, "task": task, "metric": "accuracy", "value": score, "n": 8} | {
        "ci_low": score,
        "ci_high": score,
        "behaviour": behaviour,
    }


def _hand_written(tmp_path, tiny_model_dir, mixtures: str, rows=_rows):
    """A mixture study's Results whose probes are hand-written per-row scores `rows(label, step, task)`
    (steps 0 for the base, 2 and 4 for every mixture), and its analyse job's parameters."""
    kind, spec = load_study(write_mixture_study(tmp_path, tiny_model_dir, mixtures))
    tasks, plan = prepare(kind, spec)
    root, done = tmp_path / "store", {}
    for job in [*plan.by_kind("probe_base"), *plan.by_kind("train_mixture")]:
        steps = [0] if job.kind == "probe_base" else [2, 4]
        for step in steps:
            for t in TASKS:
                folder = root / "jobs" / job.id / PROBES / f"step-{step:06d}" / t
                write_rows(folder / "predictions.jsonl", rows(job.params.label, step, t))
        done[job.id] = {"probes": [_probe(s, t) for s in steps for t in TASKS]}
    results = Results(spec, tasks, plan, root, done, pd.DataFrame(columns=SCORE_COLUMNS))
    return results, plan.by_kind("analyse")[0].params


@pytest.fixture()
def finished(tmp_path, tiny_model_dir):
    return _hand_written(tmp_path, tiny_model_dir, "[{name: m, strategy: equal}]")


def test_checkpoints_are_paired_with_step_0_and_the_previous_probe(finished):
    results, p = finished
    a = analysis.analyse(results, p)
    table = a.tables["comparisons"]
    assert list(table.columns) == COLUMNS
    assert len(table) == 3 * 3  # per task: steps 2 and 4 vs step 0, step 4 vs step 2
    rows = table.set_index(["a", "b", "target"])
    drop = rows.loc[("m · step 4", "base · step 0", "toy_a")]
    # 8 discordant rows, all worse: diff −1, exact McNemar p = 2 · 0.5⁸; BH over 9 rows with 2 such p's
    assert drop["diff"] == -1 and drop["p"] == pytest.approx(2 * 0.5**8)
    assert drop["q"] == pytest.approx(2 * 0.5**8 * 9 / 2) and drop["significant"]
    assert rows.loc[("m · step 4", "m · step 2", "toy_a"), "significant"]
    same = table[table["diff"] == 0]
    assert len(same) == 7 and (same["p"] == 1).all() and not same["significant"].any()
    curves = a.tables["curves"].set_index(["task", "step"])
    assert curves.loc[("toy_a", 4), "degraded"] and curves.loc[("toy_a", 4), "worse_than_previous"]
    assert not curves.drop(index=[("toy_a", 4)])["degraded"].any()
    d = a.tables["degradation"].set_index("task")
    assert d.at["toy_a", "first_degraded_step"] == 4 and pd.isna(d.at["toy_b", "first_degraded_step"])
    html = render_report("t", sections.sections(a, results), {})
    assert "2 of 9 probe comparisons are significant" in html


def test_every_two_mixtures_final_checkpoints_are_compared(tmp_path, tiny_model_dir):
    """Mixture m forgets toy_a at its last step, mixture n does not: the m − n row on toy_a is the 8
    discordant rows (diff −1, exact McNemar p = 2 · 0.5⁸); on the other tasks they agree row for row."""

    def rows(label: str, step: int, task: str) -> list[int]:
        return [1] * 8 if (label, task) == ("n", "toy_a") else _rows(label, step, task)

    mixtures = "[{name: m, strategy: equal}, {name: n, strategy: proportional}]"
    results, p = _hand_written(tmp_path, tiny_model_dir, mixtures, rows)
    table = analysis.analyse(results, p).tables["comparisons"]
    finals = table[table["b"] == "n · step 4"].set_index("target")
    assert list(finals.index) == TASKS and (finals["a"] == "m · step 4").all()
    assert finals.at["toy_a", "diff"] == -1 and finals.at["toy_a", "p"] == pytest.approx(2 * 0.5**8)
    assert (finals.drop(index="toy_a")["diff"] == 0).all()
    assert len(table) == 2 * 3 * 3 + 3  # per mixture and task 3 checkpoint rows, plus 3 final pairs
