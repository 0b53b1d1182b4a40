"""The tradeoff study end to end on the tiny local Llama: grid of methods × learning rates × formats,
WiSE-FT evaluations, code length, token analysis, the report and tables; bad inputs exit 2."""

from __future__ import annotations

import pandas as pd
import pytest
from tests.conftest import write_jsonl
from tests.studies.conftest import TASKS, write_toy_study
from tests.studies.evidence_support import COLUMNS

from spillover.cli import main
from spillover.engine.plan import JobParams
from spillover.engine.store import Store
from spillover.studies.run import load_study, prepare, run_study

MATH_TASK = """  - name: toy_math
    type: generation
    train: m_train.jsonl
    test: m_test.jsonl
    metric: exact_match
    answer_field: answer
    extract: last_number
    max_new_tokens: 8
"""

METHODS = """
  - {label: ce}
  - {label: talr, objective: talr, objective_params: {floor: 0.05}}
  - {label: flow, objective: flow}
  - {label: l2, regularizers: {l2_to_init: {weight: 0.1}}, learning_rates: [0.02], wise_ft: [0.5]}
  - {label: full, method: full, learning_rates: [0.001], wise_ft: [0.5]}"""


def write_tradeoff_study(folder, model_dir, *, methods: str = METHODS, extra: str = "") -> object:
    write_toy_study(folder, model_dir)  # the toy task data and tasks.yaml
    rows = [
        {
            "id": str(i),
            "input": f"{i} plus 1?",
            "output": f"{i} + 1 = {i + 1}\n#### {i + 1}",
            "answer": str(i + 1),
        }
        for i in range(12)
    ]
    write_jsonl(folder / "m_train.jsonl", rows)
    write_jsonl(folder / "m_test.jsonl", rows[:4])
    (folder / "tasks.yaml").write_text(TASKS + MATH_TASK)
    study = folder / "tradeoff.yaml"
    study.write_text(f"""study: tradeoff
model: {model_dir}
tasks_file: tasks.yaml
output_dir: {folder / "out"}
precision: fp32
domains: [toy_math]
general: [toy_a, toy_b]
learning_rates: [0.001, 0.03]
formats: [target, label_only]
methods: {methods}
train: {{limit: 12, batch_size: 4, max_steps: 2, checkpoint_every: 2}}
eval: {{limit: 4, batch_size: 4}}
codelength: {{limit: 4, tasks: [toy_gen]}}  # general data for ΔCL_general
tokens: {{examples: 2, thresholds: [0.1, 0.5]}}
{extra}""")
    return study


@pytest.fixture()
def tradeoff_file(tmp_path, tiny_model_dir):
    return write_tradeoff_study(tmp_path, tiny_model_dir)


@pytest.mark.integration
def test_tradeoff_study_end_to_end(tradeoff_file, tmp_path):
    kind, spec = load_study(tradeoff_file)
    summary, out = run_study(kind, spec)
    assert summary.ok, summary.failed
    runs = pd.read_csv(out / "tables" / "runs.csv")
    # 2 formats × (3 methods × 2 lrs + l2 at 1 lr (+ WiSE) + full at 1 lr (+ WiSE)) + the base
    assert len(runs) == 2 * (3 * 2 + 2 + 2) + 1
    assert set(runs["method"]) == {"base", "ce", "talr", "flow", "l2", "full"}
    assert runs["general_score"].notna().all() and runs["domain_score"].notna().all()
    assert runs["on_front"].any()
    base = runs[runs["model"] == "base"].iloc[0]
    assert base["general_score"] == pytest.approx((base["general_toy_a"] + base["general_toy_b"]) / 2)
    cl = pd.read_csv(out / "tables" / "code_length.csv")
    assert {"dCL_domain", "dCL_general", "CL_toy_gen"} <= set(cl.columns) and "CL_toy_a" not in cl
    assert (cl["CL_general"] == cl["CL_toy_gen"]).all()
    assert cl.loc[cl["model"] == "base", "dCL_domain"].iloc[0] == 0
    # ΔCL as paired tests: every model (runs and WiSE-FT points) vs the base on both code-length tasks
    cl_stats = pd.read_csv(out / "tables" / "code_length_stats.csv")
    assert list(cl_stats.columns) == COLUMNS and (cl_stats["b"] == "base").all()
    assert len(cl_stats) == 2 * (len(runs) - 1) and set(cl_stats["target"]) == {"toy_math", "toy_gen"}
    store = Store(out)
    per_row = {}
    for job in store.jobs():
        if job["kind"] == "codelen":
            result = store.result(job["id"])
            per_row[result["label"]] = result["code_length"]["toy_gen"]["rows"]
    store.close()
    row = cl_stats[cl_stats["target"] == "toy_gen"].iloc[0]
    a, b = pd.Series(per_row[row["a"]]), pd.Series(per_row["base"])
    assert len(a) == 4 and row["diff"] == pytest.approx((a - b).mean())
    tokens = pd.read_csv(out / "tables" / "token_summary.csv")
    assert set(tokens["format"]) == {"target", "label_only"} and (tokens["n_tokens"] > 0).all()
    talr = pd.read_csv(out / "tables" / "talr_weights.csv")
    assert {"tau", "w_mean", "w_p50"} <= set(talr["stat"]) and talr["step"].max() == 2
    paired = pd.read_csv(out / "tables" / "comparisons.csv")
    assert list(paired.columns) == COLUMNS and paired["p"].between(0, 1).all()
    matched = pd.read_csv(out / "tables" / "matched_pairs.csv")
    assert len(matched) and len(paired[paired["target"] == "general"]) == len(matched)
    behaviour = pd.read_csv(out / "tables" / "behaviour.csv")  # what each model answered, per evaluation
    evals = pd.read_csv(out / "tables" / "scores.csv")[["model", "target"]].drop_duplicates()
    assert len(behaviour) == len(evals) and behaviour["majority_share"].dropna().between(0, 1).all()
    assert behaviour["majority_share"].notna().any()  # NaN only for generation targets
    assert "Behaviour per model and task" in (out / "report.html").read_text()
    for name in ("runs", "pareto_front", "code_length", "token_cdf", "token_hist", "scores"):
        assert (out / "tables" / f"{name}.parquet").exists()
    html = (out / "report.html").read_text()
    for title in (
        "Domain vs general score",
        "Code length",
        "Token probabilities",
        "TALR weights",
        "Pareto frontier",
    ):
        assert title in html
    assert html.count('<figure class="coloured">') == 4  # 2 examples × 2 formats


def test_label_only_trains_on_the_bare_answer(tradeoff_file):
    kind, spec = load_study(tradeoff_file, ["methods=[{label: ce}]", "learning_rates=[0.01]"])
    summary, out = run_study(kind, spec)
    store = Store(out)
    tokens = {r["format"]: r for r in (store.result(j["id"]) for j in store.jobs() if j["kind"] == "tokens")}
    store.close()
    assert summary.ok
    assert "".join(tokens["label_only"]["examples"][0]["tokens"]).startswith("1")
    assert "####" in "".join(tokens["target"]["examples"][0]["tokens"])


def test_wise_alpha_evaluations_and_rerun_skips(tradeoff_file):
    kind, spec = load_study(
        tradeoff_file, ["methods=[{label: ce, wise_ft: [0.5]}]", "learning_rates=[0.03]", "formats=[target]"]
    )
    summary, out = run_study(kind, spec)
    assert summary.ok
    runs = pd.read_csv(out / "tables" / "runs.csv")
    assert sorted(runs["alpha"]) == [0.5, 1.0, 1.0]
    paired = pd.read_csv(out / "tables" / "comparisons.csv")
    assert list(paired.columns) == COLUMNS
    assert len(paired) == 2 * 3 and set(paired["b"]) == {"base"}  # the run and its WiSE point × 3 targets
    assert "Paired comparisons" in (out / "report.html").read_text()
    again, _ = run_study(kind, spec)
    assert not again.done and len(again.skipped) == len(summary.done)


def plan_ids(study, overrides: list[str]) -> dict[str, str]:
    kind, spec = load_study(study, ["methods=[{label: ce, wise_ft: [0.5]}]", *overrides])
    _, plan = prepare(kind, spec)
    assert all(isinstance(job.params, JobParams) for job in plan)  # typed parameters, no dicts
    return {job.name: job.id for job in plan}


def test_job_ids_cover_results_not_speed_settings(tradeoff_file):
    default = plan_ids(tradeoff_file, [])
    speed = ["train.compile=true", "train.log_every=5", "train.checkpoint_every=7", "eval.compile=true"]
    assert plan_ids(tradeoff_file, speed) == default
    changed = plan_ids(tradeoff_file, ["learning_rates=[0.001, 0.02]"])  # 0.03 -> 0.02: its runs only
    moved = {name for name in default if default[name] != changed.get(name)}
    assert moved == {name for name in default if "lr=0.03" in name} | {"analyse + report"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["general=[toy_math]"], "both a domain and a general task"),
        (["methods=[{label: x, objective: talr, objective_params: {temperature: 2}}]"], "unknown parameter"),
        (["methods=[{label: x, objective: talr, objective_params: {floor: 2}}]"], "floor=2 is not allowed"),
        (["methods=[{label: x, wise_ft: [1.5]}]"], "wise_ft alpha 1.5"),
        (
            ["methods=[{label: x, regularizers: {l2_to_init: {weight: -1}}}]"],
            "weight = -1: Input should be greater than or equal to 0",
        ),
        (["domains=[toy_gen]", "codelength.tasks=[toy_a]"], "label_only needs a domain"),
        (["learning_rates=[0]"], "learning_rates must be > 0"),
        (["formats=[cot]"], "formats.0"),
        (["codelength.tasks=[toy_math]"], "is a domain"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tradeoff_file, tmp_path, capsys, overrides, message):
    assert main(["run", str(tradeoff_file), *overrides]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
