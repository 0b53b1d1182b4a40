"""`spillover predict` on a finished toy transfer study (issue 26): leave-one-source-out table, a new
source's predicted row with its cost, the gradient cache, and the refusals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from spillover.analysis.prediction import METHODS
from spillover.cli import PREDICTION_METHODS, main
from spillover.studies.context import StudyContext
from spillover.studies.run import load_study, run_study
from spillover.training import gradients

COLUMNS = ["method", "spearman", "sign_accuracy", "regret", "cost_fraction", "n_sources"]


def test_cli_method_choices_match_the_library():
    assert PREDICTION_METHODS == METHODS


@pytest.fixture()
def finished(make_study):
    study = make_study(sources="[toy_a, toy_b, toy_gen]")
    summary, out = run_study(*load_study(study))
    assert summary.ok
    return out


@pytest.mark.integration
def test_evaluate_and_predict(finished, monkeypatch, capsys):
    calls, probes = [], []
    real = gradients.mean_gradient
    monkeypatch.setattr(gradients, "mean_gradient", lambda *a, **k: calls.append(1) or real(*a, **k))
    train = StudyContext.train_sequences

    def probe(self, seqs, settings, *args, **kwargs):
        # the gradient signal's adapters are gone: the probe trains on the plain base
        assert not any("lora_" in name for name, _ in self.base_model().named_modules())
        probes.append(settings.max_steps)
        return train(self, seqs, settings, *args, **kwargs)

    monkeypatch.setattr(StudyContext, "train_sequences", probe)
    assert main(["predict", str(finished), "--evaluate", "--grad-examples", "4"]) == 0
    table = pd.read_csv(finished / "tables" / "prediction_eval.csv")
    assert list(table.columns) == COLUMNS and list(table["method"]) == list(METHODS)
    assert (table["n_sources"] <= 3).all()
    cost = table.set_index("method")["cost_fraction"]
    assert cost["mean_row"] == 0 and cost["task_type"] == 0
    assert 0 < cost["gradient"] < cost["combined"] and 0 < cost["probe"] < cost["combined"]
    # the probe: 5% of each source's run (toy: 3 steps, so the minimum of 1 step), once per source
    assert probes == [1, 1, 1]
    # one vector per task: a source's gradient (its first train rows, no transforms) is also the
    # gradient of the target of the same task
    assert len(calls) == 3
    cached = json.loads(next((finished / "prediction" / "gradients").glob("*.json")).read_text())
    assert cached["seconds"] > 0
    probe_files = {p.name for p in (finished / "prediction" / "probes").rglob("*")}
    assert "checkpoints" not in probe_files and not any(n.endswith(".safetensors") for n in probe_files)
    assert "leave-one-source-out" in capsys.readouterr().out
    report = (finished / "report.html").read_text()
    assert "Predicted transfer (spillover predict)" in report and "Leave-one-source-out check" in report

    again = table.copy()
    assert main(["predict", str(finished), "--evaluate", "--grad-examples", "4"]) == 0
    assert len(calls) == 3 and len(probes) == 3  # everything from the cache, costs included: the same table
    pd.testing.assert_frame_equal(pd.read_csv(finished / "tables" / "prediction_eval.csv"), again)

    # a new source, added to the study's task file after the study ran
    tasks = finished.parent / "tasks.yaml"
    text = tasks.read_text() + "  - name: toy_c\n    type: classification\n    task_type: sentiment\n"
    text += "    train: a_train.jsonl\n    test: a_test.jsonl\n    labels: [negative, positive]\n    metric: accuracy\n"
    tasks.write_text(text)
    assert main(["predict", str(finished), "--source", "toy_c", "--grad-examples", "4"]) == 0
    row = pd.read_csv(finished / "prediction" / "toy_c" / "predicted_delta.csv")
    assert list(row.columns) == ["source", "target", "predicted_delta", "low", "high"]
    assert list(row["target"]) == ["toy_a", "toy_b", "toy_gen"] and (row["source"] == "toy_c").all()
    assert np.isfinite(row["predicted_delta"]).all()
    assert (row["low"] <= row["predicted_delta"]).all() and (row["predicted_delta"] <= row["high"]).all()
    cost = json.loads((finished / "prediction" / "toy_c" / "cost.json").read_text())
    assert (
        cost["seconds"]["gradient"] > 0
        and cost["seconds"]["probe"] > 0
        and cost["fraction_of_a_fine_tune"] > 0
    )
    assert len(probes) == 4  # toy_c's own probe
    assert cost["method"] == "combined"
    # the study's report and tables/ carry the row, and a re-render keeps both predictions
    assert main(["report", str(finished)]) == 0
    shown = pd.read_csv(finished / "tables" / "predicted_delta.csv")
    assert list(shown["source"].unique()) == ["toy_c"] and (shown["method"] == "combined").all()
    pd.testing.assert_frame_equal(pd.read_csv(finished / "tables" / "prediction_eval.csv"), again)
    assert "Predicted Δ of new sources" in (finished / "report.html").read_text()


@pytest.mark.integration
def test_refusals(finished, tmp_path, capsys):
    def refused(*args: str) -> str:
        assert main(["predict", str(finished), *args]) == 2
        return capsys.readouterr().err

    assert "already measured" in refused("--source", "toy_a", "--grad-examples", "0")
    assert "unknown task 'nope'" in refused("--source", "nope")
    assert "either --source TASK or --evaluate" in refused()
    assert "either --source TASK or --evaluate" in refused("--evaluate", "--source", "toy_a")
    assert "the probe fraction must be in (0, 1]" in refused("--evaluate", "--probe-fraction", "1.5")
    assert "--method probe needs its signal" in refused(
        "--source", "toy_b", "--method", "probe", "--probe-fraction", "0"
    )
    unfinished = finished.parent  # the study's input folder: a study.yaml, no tables
    assert main(["predict", str(unfinished), "--evaluate"]) == 2
    assert "no tables/delta_stats.csv yet; finish the study" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(tmp_path / "empty"), "--evaluate"]) == 2
    assert "is not a study folder" in capsys.readouterr().err
