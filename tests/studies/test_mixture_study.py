"""The mixture study end to end on the tiny local model (toy tasks from conftest.py): curves, degradation,
tables and report; skipping finished work; bad input rejected before anything is written."""

from __future__ import annotations

import pandas as pd
import pytest
from tests.studies.conftest import write_toy_study
from tests.studies.evidence_support import COLUMNS

from spillover.cli import main
from spillover.studies.run import load_study, run_study

MIXTURES = """
  - {name: equal, strategy: equal}
  - {name: a_heavy, ratios: {toy_a: 0.8, toy_b: 0.1, toy_gen: 0.1}, sampling: batch}
  - name: anneal
    schedule: {phases: [{until: 0.5, ratios: [1, 1, 1]}, {until: 1.0, ratios: [0.1, 0.1, 0.8]}]}"""


def write_mixture_study(folder, model_dir, mixtures: str = MIXTURES, extra: str = ""):
    study = write_toy_study(folder, model_dir)  # writes the toy tasks and data
    study.write_text(f"""study: mixture
model: {model_dir}
tasks_file: tasks.yaml
output_dir: {folder / "out"}
precision: fp32
tasks: [toy_a, toy_b, toy_gen]
mixtures: {mixtures}
train: {{limit: 16, batch_size: 4, max_steps: 4, learning_rate: 0.01, checkpoint_every: 2}}
eval: {{limit: 6, batch_size: 4}}
checkpoints: {{every: 2, free_tokens: 3}}
{extra}""")
    return study


@pytest.fixture()
def mixture_study(tmp_path, tiny_model_dir):
    return write_mixture_study(tmp_path, tiny_model_dir)


@pytest.mark.integration
def test_mixture_study_runs_and_reports(mixture_study, tmp_path):
    summary, out = run_study(*load_study(mixture_study))
    assert summary.ok, summary.failed
    tables = out / "tables"
    curves = pd.read_csv(tables / "curves.csv")
    # base (step 0) + checkpoints 2 and 4, for 3 mixtures × 3 tasks
    assert sorted(curves["step"].unique()) == [0, 2, 4] and len(curves) == 3 * 3 * 3
    final = pd.read_csv(tables / "final_scores.csv", index_col=0)
    assert list(final.index) == ["base", "equal", "a_heavy", "anneal"]
    assert list(final.columns) == ["toy_a", "toy_b", "toy_gen", "mean"]
    ratios = pd.read_csv(tables / "ratios.csv", index_col=0)
    assert ratios.loc["a_heavy", "toy_a"] == pytest.approx(0.8)
    assert ratios.loc["anneal", "toy_gen"] == pytest.approx(0.5 * 1 / 3 + 0.5 * 0.8)
    plans = pd.read_csv(tables / "plans.csv")
    assert plans.groupby("mixture")["sequences"].sum().eq(4 * 4).all()
    behaviour = pd.read_csv(tables / "behaviour_final.csv")
    assert {"hedge_rate", "format_fail_rate", "sounds_like", "style/toy_gen", "mean_length"} <= set(
        behaviour.columns
    )
    assert behaviour["sounds_like"].dropna().isin(["toy_a", "toy_b", "toy_gen"]).all()  # None: blank outputs
    degradation = pd.read_csv(tables / "degradation.csv")
    assert set(degradation.columns) >= {"minor", "first_degraded_step", "final_minus_best"}
    paired = pd.read_csv(tables / "comparisons.csv")
    assert list(paired.columns) == COLUMNS
    # per mixture × task: checkpoints 2 and 4 vs step 0, and 4 vs 2; per task: the 3 pairs of final checkpoints
    assert len(paired) == 3 * 3 * 3 + 3 * 3 and set(paired["b"]) >= {"base · step 0", "equal · step 2"}
    assert {"diff_vs_step0", "q_vs_step0", "worse_than_previous"} <= set(curves.columns)
    minor = degradation.set_index(["mixture", "task"])["minor"]
    assert minor[("a_heavy", "toy_b")] and not minor[("equal", "toy_b")]  # 1/3 is not below 1/3
    # score-vs-ratio regression over the 3 mixtures: each held out once, proposals inside the measured range
    # fitted on the final scores, and on the scores at step 2 (a short proxy run), both against the final
    held_out = pd.read_csv(tables / "mixture_prediction.csv")
    assert len(held_out) == 2 * 3 * 3 and held_out[["measured", "predicted"]].notna().all().all()
    assert list(held_out["fit_on"].unique()) == ["final", "step 2 (proxy)"]
    fits = pd.read_csv(tables / "mixture_prediction_summary.csv")
    assert list(fits["task"]) == ["toy_a", "toy_b", "toy_gen"] * 2
    proxy = held_out[held_out["fit_on"] == "step 2 (proxy)"].set_index(["mixture", "task"])["measured"]
    final = held_out[held_out["fit_on"] == "final"].set_index(["mixture", "task"])["measured"]
    pd.testing.assert_series_equal(proxy, final)  # measured is always the final score
    proposed = pd.read_csv(tables / "mixture_recommendation.csv")
    ratios = pd.read_csv(tables / "ratios.csv", index_col="mixture")
    assert 0 < len(proposed) <= 5
    for task in ratios.columns:
        assert proposed[f"ratio/{task}"].between(ratios[task].min() - 1e-9, ratios[task].max() + 1e-9).all()
    main_task = pd.read_csv(tables / "main_task.csv")
    assert list(main_task["mixture"]) == ["equal", "a_heavy", "anneal"]
    assert main_task.set_index("mixture").at["a_heavy", "largest_ratio_task"] == "toy_a"
    html = (out / "report.html").read_text()
    for title in ("Score over training steps", "Final scores", "Paired comparisons", "de-facto main task"):
        assert title in html
    log = (out / "jobs").glob("train_mixture-*/train_log.jsonl")
    assert all('"mix/toy_a"' in p.read_text() and '"epochs/toy_gen"' in p.read_text() for p in log)

    again, _ = run_study(*load_study(mixture_study))
    assert not again.done and len(again.skipped) == len(summary.done)


def _paired(rows):
    """A `probe_comparisons`-shaped frame from (mixture, step, task, vs, diff, significant) tuples."""
    frame = pd.DataFrame(rows, columns=["mixture", "step", "task", "vs", "diff", "significant"])
    return frame.assign(q=[0.01 if s else 0.5 for s in frame["significant"]])


def test_degradation_is_the_first_checkpoint_significantly_below_step_0():
    from spillover.studies.mixture.analysis import mark_degradation

    curves = pd.DataFrame({"mixture": "m", "task": "t", "step": [0, 2, 4, 6], "value": [0.5, 0.7, 0.4, 0.2]})
    paired = _paired(
        [
            ("m", 2, "t", "step 0", 0.2, True),  # significantly better: not degraded
            ("m", 4, "t", "step 0", -0.1, False),  # worse than step 0 but within noise
            ("m", 4, "t", "previous", -0.3, True),  # a significant drop from step 2 (flagged, not degraded)
            ("m", 6, "t", "step 0", -0.3, True),
            ("m", 6, "t", "previous", -0.2, False),
        ]
    )
    marked = mark_degradation(curves, paired)
    assert list(marked["degraded"]) == [False, False, False, True]
    assert list(marked["worse_than_previous"]) == [False, False, True, False]
    assert list(marked["diff_vs_step0"].fillna(9)) == [9, 0.2, -0.1, -0.3]
    assert list(marked["q_vs_step0"].fillna(9)) == [9, 0.01, 0.5, 0.01]


@pytest.mark.parametrize(
    ("mixtures", "extra", "message"),
    [
        (
            "[{name: m, ratios: {toy_a: 1, toy_c: 1}}]",
            "",
            "unknown: ['toy_c'], missing: ['toy_b', 'toy_gen']",
        ),
        ("[{name: m, ratios: [1, 1]}]", "", "2 ratios for 3 tasks"),
        ("[{name: m}, {name: m}]", "", "mixture names must be unique"),
        ("[{name: m, strategy: temperature, temperature: 0}]", "", "temperature"),
        ("[{name: m, schedule: {phases: [{until: 0.5, ratios: [1, 1, 1]}]}}]", "", "the last must be 1.0"),
        ("[{name: m}]", "colour: red", "unknown key 'colour'"),
        ("[{name: m}]", "recommend: {grid: 0.3}", "grid 0.3 does not divide 1 into equal steps"),
        ("[{name: m}]", "recommend: {grid: 0.001}", "is 501501 ratio vectors (at most 200000)"),
        ("[{name: m}]", "recommend: {epsilon: -1}", "recommend.epsilon"),
    ],
)
def test_bad_mixture_study_exits_2_and_writes_nothing(
    tmp_path, tiny_model_dir, capsys, mixtures, extra, message
):
    study = write_mixture_study(tmp_path, tiny_model_dir, mixtures, extra)
    assert main(["run", str(study)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_degradation_and_main_task_tables_by_hand():
    from spillover.studies.mixture.analysis import degradation_table, main_task_table, mark_degradation

    curves = mark_degradation(
        pd.DataFrame(
            {
                "mixture": "m",
                "task": ["a"] * 3 + ["b"] * 3,
                "step": [0, 5, 10] * 2,
                "value": [0.5, 0.8, 0.9, 0.6, 0.62, 0.3],
            }
        ),
        _paired([("m", 5, "b", "step 0", 0.02, False), ("m", 10, "b", "step 0", -0.3, True)]),
    )
    ratios = pd.DataFrame({"a": [0.9], "b": [0.1]}, index=pd.Index(["m"], name="mixture"))
    d = degradation_table(curves, ratios).set_index("task")
    assert d.at["b", "minor"] and not d.at["a", "minor"]  # 0.1 < 1/2 ≤ 0.9
    assert d.at["b", "first_degraded_step"] == 10 and d.at["b", "final_minus_best"] == pytest.approx(-0.32)
    assert pd.isna(d.at["a", "first_degraded_step"]) and d.at["a", "best_step"] == 10
    final = pd.DataFrame(
        {
            "mixture": "m",
            "task": ["a", "b"],
            "value": [0.9, 0.3],
            "sounds_like": ["a", "a"],
            "style/a": [0.9, 0.7],
            "style/b": [0.2, 0.4],
        }
    )
    base = pd.DataFrame({"mixture": "base", "task": ["a", "b"], "value": [0.5, 0.6]})
    row = main_task_table(final, base, ratios).iloc[0]
    assert (row["main_task_by_style"], row["largest_gain_task"], row["largest_ratio_task"]) == ("a", "a", "a")
    assert row["largest_gain"] == pytest.approx(0.4) and row["style_votes"] == "a: 2"


@pytest.mark.integration
def test_a_failed_mixture_leaves_a_partial_report(mixture_study, monkeypatch):
    from spillover.studies.mixture import handlers

    real = handlers.train_mixture_job

    def flaky(ctx, plan, job):
        if job.params.label == "a_heavy":
            raise RuntimeError("simulated failure")
        return real(ctx, plan, job)

    monkeypatch.setitem(handlers.HANDLERS, "train_mixture", flaky)
    summary, out = run_study(*load_study(mixture_study))
    assert len(summary.failed) == 2  # the mixture and the (partial) analysis
    final = pd.read_csv(out / "tables" / "final_scores.csv", index_col=0)
    assert list(final.index) == ["base", "equal", "anneal"]
    assert "mixtures without results (failed or not run yet): a_heavy" in (out / "report.html").read_text()
    monkeypatch.setitem(handlers.HANDLERS, "train_mixture", real)
    fixed, _ = run_study(*load_study(mixture_study))
    assert fixed.ok and len(fixed.done) == 2  # the failed mixture and the analysis


def test_speed_settings_leave_job_ids_alone():
    """compile / log_every / checkpoint_every are cache-neutral; a training setting or the probe interval
    re-trains every mixture but keeps the base probe; the probed slice changes every job."""
    from spillover.studies import STUDIES
    from spillover.studies.mixture.spec import MixtureStudySpec

    kind = STUDIES.get("mixture")()
    fingerprints = {t: {"spec": t} for t in ("a", "b")}

    def ids(**over):
        spec = {"study": "mixture", "output_dir": "out", "tasks": ["a", "b"], "mixtures": [{"name": "m"}]}
        return [j.id for j in kind.build_plan(MixtureStudySpec.model_validate(spec | over), fingerprints)]

    base = ids()
    assert (
        ids(train={"compile": False, "log_every": 5, "checkpoint_every": 3}, eval={"compile": True}) == base
    )
    lr = ids(train={"learning_rate": 0.1})
    assert lr[0] == base[0] and lr[1] != base[1]
    assert all(a != b for a, b in zip(ids(eval={"limit": 3}), base, strict=True))
    every = ids(checkpoints={"every": 3})  # probes at other steps: the base probe (step 0) is kept
    assert every[0] == base[0] and every[1] != base[1]
