"""The transfer study end to end on a tiny local model: plan, run, skip finished work, report, status.
The toy study (`study_file`) is in conftest.py."""

from __future__ import annotations

import json
from html import escape as html_escape

import numpy as np
import pandas as pd
import pytest

from spillover.cli import main
from spillover.data.stats import SYNTAX_INSTALL_NOTE, installed_parser
from spillover.engine.store import Store
from spillover.studies import context
from spillover.studies.run import load_study, run_study, study_status


@pytest.mark.integration
def test_transfer_study_runs_skips_and_extends(study_file, tmp_path, monkeypatch):
    parsed = installed_parser() is not None
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
    # the syntactic profile (issue 27): summarised in dataset_stats.csv where make setup's parser is installed
    datasets = pd.read_csv(out / "tables" / "dataset_stats.csv", index_col="dataset")
    syntax = datasets[[c for c in datasets.columns if c.startswith("syntax_")]]
    assert syntax.shape == (len(datasets), 5) and datasets["syntactic_profile"].all() == parsed
    assert syntax.notna().all().all() if parsed else syntax.isna().all().all()
    assert parsed or html_escape(SYNTAX_INSTALL_NOTE) in html

    # generated lengths, paired (toy_gen is the only generation target): 3 sources vs base, 3 source pairs
    lengths = pd.read_csv(out / "tables" / "length_stats.csv")
    assert set(lengths["target"]) == {"toy_gen"} and len(lengths) == 6
    assert (lengths["b"] == "base").sum() == 3 and (lengths["metric"] == "generated tokens").all()
    row = lengths[(lengths["a"] == "toy_b") & (lengths["b"] == "base")].iloc[0]
    by_hand = _mean_generated_tokens(out, "toy_b", spec) - _mean_generated_tokens(out, "base", spec)
    assert row["diff"] == pytest.approx(by_hand) and row["n"] == 6

    # the mislabelled control against plain toy_a on every target: the difference of their Δ cells
    controls = pd.read_csv(out / "tables" / "control_stats.csv").set_index("target")
    assert list(controls.index) == ["toy_a", "toy_b", "toy_gen"]
    assert (controls["a"] == "toy_a+mislabel(fraction=1.0)").all() and (controls["b"] == "toy_a").all()
    gap = delta.loc["toy_a+mislabel(fraction=1.0)"] - delta.loc["toy_a"]
    assert np.allclose(controls["diff"], gap[controls.index])

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


# ------------------------------------------------------------------------------ paired Δ and traits (#24)

DELTA_STATS = [
    "source",
    "target",
    "metric",
    "delta",
    "ci_low",
    "ci_high",
    "p",
    "q",
    "significant",
    "n",
    "seeds",
]
BASE_ROWS = [1, 0] * 20  # 40 test rows, base right on half of them


def _planted(job):
    """Every model scores like the base except toy_a on toy_a: right on every row (20 rows better)."""
    if job.kind != "eval":
        return None
    p = job.params
    return [1] * 40 if (p.label, p.target) == ("toy_a", "toy_a") else BASE_ROWS


def test_delta_stats_pairs_every_cell_with_the_base_by_hand(study_file, tmp_path):
    from tests.studies.evidence_support import fake_results

    from spillover.studies.contract import BASE
    from spillover.studies.transfer.analysis import delta_stats

    kind, spec = load_study(study_file)
    results = fake_results(kind, spec, tmp_path / "store", _planted)
    sources = [s.name for s in spec.sources]
    table = delta_stats(results, [BASE, *sources], spec.targets)
    assert list(table.columns) == DELTA_STATS and len(table) == 4 * 3
    assert table.loc[table["target"] == "toy_gen", "metric"].eq("rouge_l").all()
    # the base against itself (and every cell scoring like the base): Δ 0, a point CI, p = 1, not significant
    same = table[~((table["source"] == "toy_a") & (table["target"] == "toy_a"))]
    assert (same["delta"] == 0).all() and (same["ci_low"] == 0).all() and (same["ci_high"] == 0).all()
    assert (same["p"] == 1).all() and not same["significant"].any()
    # planted: 20 discordant rows, all for the tuned model: exact McNemar p = 2 · 0.5²⁰, BH q = p · 12 / 1
    (planted,) = table[(table["source"] == "toy_a") & (table["target"] == "toy_a")].to_dict("records")
    assert planted["delta"] == 0.5 and 0 < planted["ci_low"] < 0.5 < planted["ci_high"] <= 1
    assert planted["p"] == pytest.approx(2 * 0.5**20) and planted["q"] == pytest.approx(12 * 2 * 0.5**20)
    assert planted["significant"] and (table["n"] == 40).all() and (table["seeds"] == 1).all()


def test_controls_are_projected_onto_traits_fitted_without_them():
    from spillover.studies.contract import Analysis
    from spillover.studies.transfer.analysis import _traits
    from spillover.studies.transfer.spec import TransferAnalysisSpec

    delta = pd.DataFrame(
        [[0.2, 0.0, 0.1], [0.0, 0.2, -0.1], [-0.2, -0.2, 0.0], [9.0, -9.0, 9.0]],
        index=["a", "b", "c", "a+mislabel(fraction=1.0)"],
        columns=["a", "b", "c"],
    )
    out = Analysis(tables={})
    _traits(out, delta, ["a+mislabel(fraction=1.0)"], {}, TransferAnalysisSpec(), seed=0)
    alone = Analysis(tables={})
    _traits(alone, delta.iloc[:3], [], {}, TransferAnalysisSpec(), seed=0)
    # the control's extreme row shapes nothing: loadings, variance and null equal the fit without it
    pd.testing.assert_frame_equal(out.tables["pca_loadings"], alone.tables["pca_loadings"])
    pd.testing.assert_frame_equal(out.tables["pca_null"], alone.tables["pca_null"])
    null = out.tables["pca_null"]
    assert list(null.columns) == ["component", "explained", "null_p95", "p", "above_null"]
    assert list(null["component"]) == ["PC1", "PC2"]  # min(I − 1, N) with the 3 fitted rows
    assert null["explained"].tolist() == pytest.approx(out.tables["pca_variance"].iloc[:, 0].tolist())
    assert ((null["null_p95"] >= 0) & (null["null_p95"] <= 1)).all()
    proj = out.tables["pca_projections"]
    assert list(proj.index) == list(delta.index) and proj["control"].tolist() == [False] * 3 + [True]
    loadings = out.tables["pca_loadings"].to_numpy()
    centred = delta.iloc[3].to_numpy() - delta.iloc[:3].mean().to_numpy()
    np.testing.assert_allclose(proj.iloc[3, :2].to_numpy(float), centred @ loadings, atol=1e-12)


@pytest.mark.integration
def test_study_writes_delta_stats_pca_null_and_marks_significant_cells(study_file):
    """Issue 24's acceptance on the toy transfer study: the two tables with their columns, sane values,
    and a report that marks significant Δ cells and says how many there are."""
    _, out = run_study(*load_study(study_file))
    tables = out / "tables"
    stats = pd.read_csv(tables / "delta_stats.csv")
    assert list(stats.columns) == DELTA_STATS and len(stats) == 3 * 3
    delta = pd.read_csv(tables / "delta.csv", index_col=0)
    for row in stats.itertuples():
        assert row.delta == pytest.approx(delta.at[row.source, row.target], abs=1e-9)
        assert row.ci_low - 1e-12 <= row.delta <= row.ci_high + 1e-12
    assert stats["p"].between(0, 1).all() and (stats["q"] >= stats["p"] - 1e-12).all()
    assert (stats["significant"] == (stats["q"] < 0.05)).all() and (stats["n"] == 6).all()
    assert "toy_a+mislabel(fraction=1.0)" in set(stats["source"])  # controls keep their Δ rows
    null = pd.read_csv(tables / "pca_null.csv")
    assert list(null.columns) == ["component", "explained", "null_p95", "p", "above_null"]
    assert list(null["component"]) == ["PC1"]  # fitted on the 2 plain sources; the control is projected
    projections = pd.read_csv(tables / "pca_projections.csv", index_col=0)
    assert projections.loc["toy_a+mislabel(fraction=1.0)", "control"]
    html = (out / "report.html").read_text()
    k = int(stats["significant"].sum())
    assert f"{k} of 9 Δ cells are significant" in html
    assert "* = significant, BH q" in html and "faded = not)" in html  # the Δ heatmap's marking
    assert '"opacity":0.35' in html and "not significant" in html  # cells that are not significant fade
    assert "permutation null" in html


def _mean_generated_tokens(out, label: str, spec) -> float:
    """Mean token count of `label`'s generations on toy_gen, from its predictions file."""
    from spillover.engine.store import Store
    from spillover.models.load import load_tokenizer

    store = Store(out)
    try:
        (job,) = [j for j in store.jobs() if j["name"] == f"eval {label} -> toy_gen"]
    finally:
        store.close()
    rows = [
        json.loads(line) for line in (out / "jobs" / job["id"] / "predictions.jsonl").read_text().splitlines()
    ]
    tok = load_tokenizer(spec.model)
    return float(np.mean([len(tok(r["prediction"], add_special_tokens=False)["input_ids"]) for r in rows]))
