"""The transfer study end to end on a tiny local model: plan, run, skip finished work, report, status.
The toy study (`study_file`) is in conftest.py."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from spillover.cli import main
from spillover.engine.store import Store
from spillover.studies import context
from spillover.studies.run import load_study, run_study, study_status


@pytest.mark.integration
def test_transfer_study_runs_skips_and_extends(study_file, tmp_path, monkeypatch):
    loads = []
    real_load = context.load_model
    monkeypatch.setattr(context, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    kind, spec = load_study(study_file)
    summary, out = run_study(kind, spec)
    assert summary.ok and not summary.skipped
    assert len(loads) == 1  # 3 trainings + 12 evaluations share one loaded base model
    assert (out / "report.html").exists() and (out / "results.db").exists()
    delta = pd.read_csv(out / "tables" / "delta.csv", index_col=0)
    assert list(delta.index) == ["toy_a", "toy_a+mislabel(fraction=1.0)", "toy_b"]
    assert list(delta.columns) == ["toy_a", "toy_b", "toy_gen"]
    assert (out / "tables" / "pca_loadings.parquet").exists()
    html = (out / "report.html").read_text()
    assert "Transfer matrix" in html and "Latent traits" in html

    before = (out / "report.html").stat().st_mtime_ns
    again, _ = run_study(*load_study(study_file))
    assert not again.done and len(again.skipped) == len(summary.done)
    assert (out / "report.html").stat().st_mtime_ns == before

    # one more source: only its training, its evaluations and the analysis run
    kind, spec = load_study(study_file, ["sources=[toy_a, toy_b, toy_gen]"])
    third, _ = run_study(kind, spec)
    kinds = sorted(j.split("-")[0] for j in third.done)
    assert kinds == ["analyse", "eval", "eval", "eval", "stats", "train"]


@pytest.mark.integration
def test_status_and_report_commands(study_file, tmp_path, capsys):
    kind, spec = load_study(study_file)
    run_study(kind, spec)
    out = tmp_path / "out"
    rows = study_status(out)
    assert rows and all(r["status"] == "done" for r in rows)
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").exists()
    assert main(["status", str(out)]) == 0
    assert "done" in capsys.readouterr().out


@pytest.mark.integration
def test_failed_job_is_recorded_and_the_rest_completes(study_file, tmp_path, monkeypatch):
    from spillover.studies import jobs

    real = jobs.SHARED_HANDLERS["train"]

    def flaky(ctx, plan, job):
        if job.params.task == "toy_b":
            raise RuntimeError("simulated failure")
        return real(ctx, plan, job)

    monkeypatch.setitem(jobs.SHARED_HANDLERS, "train", flaky)
    summary, out = run_study(*load_study(study_file))
    assert len(summary.failed) == 2  # the train job and the partial analysis
    assert len(summary.blocked) == 3  # toy_b's evaluations
    assert (out / "report.html").exists()  # partial report
    store = Store(out)
    failed = [j for j in store.jobs() if j["status"] == "failed"]
    store.close()
    assert any("simulated failure" in (j["error"] or "") for j in failed)
    monkeypatch.setitem(jobs.SHARED_HANDLERS, "train", real)
    fixed, _ = run_study(*load_study(study_file))
    assert fixed.ok and len(fixed.done) == 1 + 3 + 1


def test_bad_study_input_exits_2(tmp_path, study_file, capsys):
    text = study_file.read_text()
    study_file.write_text(text.replace("targets: [toy_a, toy_b, toy_gen]", "targets: [toy_a, toy_c]"))
    assert main(["run", str(study_file)]) == 2
    assert "unknown task 'toy_c'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    study_file.write_text(text.replace("mislabel", "mislabell"))
    assert main(["run", str(study_file)]) == 2
    assert "unknown transform 'mislabell'; did you mean 'mislabel'" in capsys.readouterr().err
    study_file.write_text(text.replace("train: {", "train: {mixture: {strategy: equal}, "))
    assert main(["run", str(study_file)]) == 2
    assert "this study trains on one source at a time" in capsys.readouterr().err
    study_file.write_text(text + "colour: red\n")
    assert main(["run", str(study_file)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'colour'; allowed keys:" in err and "sources" in err
    assert not (tmp_path / "out").exists()


def test_scores_carry_ci_and_n(study_file):
    _, out = run_study(*load_study(study_file))
    store = Store(out)
    rows = store.scores()
    store.close()
    assert rows and all(r["n"] == 6 and r["ci_low"] <= r["value"] <= r["ci_high"] for r in rows)
    assert json.loads((out / "jobs" / rows[0]["job_id"] / "predictions.jsonl").read_text().splitlines()[0])
