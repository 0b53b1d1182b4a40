"""The generalization study end to end on the tiny local model: plan shape, labelled tables, FTICL
training prompts, size curves, and clear errors for impossible settings."""

from __future__ import annotations

import pandas as pd
import pytest
from tests.studies.conftest import TASKS, write_toy_study

from spillover.cli import main
from spillover.errors import SpilloverError
from spillover.studies.run import load_study, prepare, run_study

# a second sentiment dataset (same files, another name) so that out-of-domain cells exist
EXTRA_TASK = """  - name: toy_a2
    type: classification
    task_type: sentiment
    train: a_train.jsonl
    test: a_test.jsonl
    labels: [negative, positive]
    metric: accuracy
"""
STUDY = """study: generalization
model: {model}
tasks_file: tasks.yaml
output_dir: {out}
precision: fp32
sources: [toy_a, toy_gen]
targets: [toy_a, toy_a2, toy_b, toy_gen]
methods: [ft, fticl]
shots: [0, 1]
fticl: {{shots: 1, demos: fixed}}
sizes: [8, 16]
train: {{batch_size: 4, max_steps: 2, learning_rate: 0.01, checkpoint_every: 1}}
eval: {{limit: 4, batch_size: 4}}
"""


@pytest.fixture()
def gen_study(tmp_path, tiny_model_dir):
    write_toy_study(tmp_path, tiny_model_dir)
    (tmp_path / "tasks.yaml").write_text(TASKS + EXTRA_TASK)
    path = tmp_path / "gen.yaml"
    path.write_text(STUDY.format(model=tiny_model_dir, out=tmp_path / "gen_out"))
    return path


def test_plan_has_one_training_per_source_method_and_size(gen_study):
    kind, spec = load_study(gen_study)
    _, plan = prepare(kind, spec)
    trains = plan.by_kind("train")
    assert len(trains) == 2 * 2 * 2
    fticl = [j for j in trains if j.params.train.shots == 1]
    assert len(fticl) == 4 and all(j.params.train.demos == "fixed" for j in fticl)
    assert sorted({j.params.train.limit for j in trains}) == [8, 16]
    assert len(plan.by_kind("eval")) == (1 + 8) * 4 * 2  # (base + models) × targets × shot settings


def test_size_shots_narrow_the_evaluations_of_the_smaller_sizes_only(gen_study):
    kind, spec = load_study(gen_study, ["size_shots=[0]"])
    _, plan = prepare(kind, spec)
    evals = plan.by_kind("eval")
    by_size = {n: {j.params.shots for j in evals if j.params.size == n} for n in (8, 16)}
    assert by_size == {8: {0}, 16: {0, 1}}  # the main size (the largest) keeps every shot setting
    assert len(evals) == (1 + 4) * 4 * 2 + 4 * 4 * 1  # base + main-size models: 2 settings; others: 1


@pytest.mark.integration
def test_study_writes_labelled_tables_and_report(gen_study, tmp_path):
    summary, out = run_study(*load_study(gen_study))
    assert summary.ok
    table = pd.read_csv(out / "tables" / "generalization.csv", index_col=0)
    assert list(table.index) == ["base", "toy_a · FT", "toy_a · FTICL", "toy_gen · FT", "toy_gen · FTICL"]
    assert list(table.columns) == [
        f"{k}-shot {s}" for k in (0, 1) for s in ("in-domain", "out-of-domain", "cross-task")
    ]
    assert (
        table.loc["toy_gen · FT", "0-shot out-of-domain"] != table.loc["toy_gen · FT", "0-shot out-of-domain"]
    )  # NaN: no other copy task
    cells = pd.read_csv(out / "tables" / "cells.csv")
    a = cells[cells["source"] == "toy_a"].set_index("target")["setting"].to_dict()
    assert a == {
        "toy_a": "in-domain",
        "toy_a2": "out-of-domain",
        "toy_b": "cross-task",
        "toy_gen": "cross-task",
    }
    assert (cells["delta"] == cells["value"] - cells["base"]).all()
    means = cells[
        (cells["size"] == 16)
        & (cells["source"] == "toy_a")
        & (cells["method"] == "ft")
        & (cells["shots"] == 0)
    ]
    assert table.loc["toy_a · FT", "0-shot cross-task"] == pytest.approx(
        means[means["setting"] == "cross-task"]["value"].mean()
    )
    curves = pd.read_csv(out / "tables" / "size_curves.csv")
    assert sorted(curves["size"].unique()) == [8, 16]
    assert {"ft", "fticl", "fticl_minus_ft"} <= set(pd.read_csv(out / "tables" / "fticl_vs_ft.csv").columns)
    html = (out / "report.html").read_text()
    for title in ("Generalization table", "Per-cell detail", "FTICL vs FT", "Training size"):
        assert title in html


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sizes=[8, 999]", "sizes \\[999\\] exceed the 24 training rows of source 'toy_a'"),
        ("shots=[0, 0]", "shots"),
        ("methods=[ft, sft]", "methods"),
        ("analysis.size=12", "analysis.size = 12 is not one of the training sizes"),
        ("size_shots=[3]", "size_shots \\[3\\] must be a subset of shots \\[0, 1\\]"),
        ("size_shots=[0, 0]", "size_shots"),
    ],
)
def test_impossible_settings_are_clear_errors(gen_study, override, message):
    with pytest.raises(SpilloverError, match=message):
        kind, spec = load_study(gen_study, [override])
        prepare(kind, spec)


def test_untyped_task_is_refused_before_any_work(gen_study, tmp_path, capsys):
    tasks = (tmp_path / "tasks.yaml").read_text().replace("    task_type: topic\n", "")
    (tmp_path / "tasks.yaml").write_text(tasks)
    assert main(["run", str(gen_study)]) == 2
    assert "toy_b" in capsys.readouterr().err and not (tmp_path / "gen_out").exists()
