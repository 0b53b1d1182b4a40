"""The multitask (CPI-FT) study end to end on the tiny local model (toy tasks from conftest.py): comparison,
forgetting, cores, sweeps, tables and report; LoRA refused; skipping finished work; bad input rejected before
anything is written."""

from __future__ import annotations

import pandas as pd
import pytest
from tests.studies.conftest import write_toy_study

from spillover.cli import main
from spillover.studies.run import load_study, run_study

CPI = "{p: 5, tau: 0.3, calibration: 6, sweep: {p: [1, 5, 50], tau: [0, 0.3, 1]}}"
TRAIN = "{method: full, limit: 12, batch_size: 4, epochs: 1, learning_rate: 0.01, weight_decay: 0.1}"


def write_multitask_study(
    folder,
    model_dir,
    *,
    cpi: str = CPI,
    train: str = TRAIN,
    extra: str = "",
    tasks: str = "[toy_a, toy_b, toy_gen]",
    sequential: str = "[[toy_a, toy_b]]",
):
    study = write_toy_study(folder, model_dir)  # the toy tasks and data
    study.write_text(f"""study: multitask
model: {model_dir}
tasks_file: tasks.yaml
output_dir: {folder / "out"}
precision: fp32
tasks: {tasks}
train: {train}
eval: {{limit: 4, batch_size: 4}}
cpi: {cpi}
sequential: {sequential}
{extra}""")
    return study


@pytest.mark.integration
def test_multitask_study_runs_and_reports(tmp_path, tiny_model_dir):
    study = write_multitask_study(tmp_path, tiny_model_dir)
    summary, out = run_study(*load_study(study))
    assert summary.ok, summary.failed
    tables = out / "tables"
    comp = pd.read_csv(tables / "comparison.csv", index_col=0)
    assert list(comp.index) == [
        "base",
        "single:toy_a",
        "single:toy_b",
        "single:toy_gen",
        "joint",
        "multistage_random",
        "multistage_heuristic",
        "cpi",
    ]
    for t in ("toy_a", "toy_b", "toy_gen"):  # a single-task model normalises to 1 on its own task
        assert comp.at[f"single:{t}", f"norm/{t}"] == pytest.approx(1.0) or comp.at[f"single:{t}", t] == 0
    # probes are scored on their own task and their sequential partner only (toy_a <-> toy_b)
    assert comp.loc["single:toy_a"][["toy_a", "toy_b"]].notna().all() and pd.isna(
        comp.at["single:toy_a", "toy_gen"]
    )
    assert comp.loc["single:toy_gen"][["toy_a", "toy_b"]].isna().all()
    norm = comp[[f"norm/{t}" for t in ("toy_a", "toy_b", "toy_gen")]]
    assert comp["normalised_average"].equals(norm.mean(axis=1, skipna=False))
    forgetting = pd.read_csv(tables / "forgetting.csv")
    assert set(zip(forgetting["A"], forgetting["B"], forgetting["method"], strict=True)) == {
        (a, b, m) for a, b in (("toy_a", "toy_b"), ("toy_b", "toy_a")) for m in ("sft", "cpi")
    }
    row = forgetting.iloc[0]
    assert row["delta_A"] == pytest.approx(row["A_final"] - row["A_after_A"])
    assert row["A_after_A"] == comp.at[f"single:{row['A']}", row["A"]]
    jac = pd.read_csv(tables / "jaccard.csv", index_col=0)
    assert jac.shape == (3, 3) and (jac.values.diagonal() == 1).all() and (jac.values == jac.values.T).all()
    overlap = pd.read_csv(tables / "core_overlap.csv")  # one row per task pair, both nulls
    assert len(overlap) == 3 and overlap["q_per_tensor"].between(0, 1).all()
    assert (
        overlap["jaccard"]
        == [jac.at[a, b] for a, b in zip(overlap["task_a"], overlap["task_b"], strict=True)]
    ).all()
    behaviour = pd.read_csv(tables / "behaviour.csv")
    assert (
        set(comp.index) <= set(behaviour["model"])
        and behaviour["majority_share"].dropna().between(0, 1).all()
    )
    assert behaviour["majority_share"].notna().any()  # NaN only for generation targets
    assert not behaviour.duplicated(["model", "target"]).any()
    sweep = pd.read_csv(tables / "sweep_groups.csv")
    assert len(sweep) == 3 * 3 and (sweep[sweep["tau"] == 0]["n_groups"] == 1).all()
    assert sweep[(sweep["tau"] == 1) & (sweep["p"] == 5)]["n_groups"].item() == 3
    sizes = pd.read_csv(tables / "core_sizes.csv")
    assert (sizes["share_of_params"].round(3) == 0.05).all()
    by_layer = pd.read_csv(tables / "core_by_layer.csv", index_col=0)
    assert by_layer.sum(axis=1).round(6).eq(1).all() and {"0", "1"} <= set(by_layer.columns)
    runs = pd.read_csv(tables / "runs.csv").set_index("run")
    assert runs.at["cpi", "fusion_tensors_slerp"] + runs.at["cpi", "fusion_tensors_lerp"] > 0
    assert (
        runs.at["seq:cpi:toy_a>toy_b", "frozen_elements"] > 0
        and runs.at["seq:sft:toy_a>toy_b", "frozen_elements"] == 0
    )
    html = (out / "report.html").read_text()
    for title in (
        "Methods compared",
        "Sequential forgetting",
        "Core regions and grouping",
        "Sweeps over p and",
    ):
        assert title in html
    assert not list((out / "jobs").glob("*/checkpoints")) and not list((out / "jobs").glob("*/*/checkpoints"))

    again, _ = run_study(*load_study(study))
    assert not again.done and len(again.skipped) == len(summary.done)
    # a new τ re-trains only the staged methods (and their evaluations): cores, joint, sequential reused; the
    # probes' models were pruned once evaluated (studies/pruning.py), so CPI-FT's fusion re-trains them first
    retau, _ = run_study(*load_study(study, ["cpi.tau=1.0"]))
    redone = sorted({j.split("-")[0] for j in retau.done})
    assert redone == ["analyse", "eval", "mt_train", "probe"]
    assert sum(j.startswith("mt_train") for j in retau.done) == 3
    assert sum(j.startswith("probe") for j in retau.done) == 3
    groups = pd.read_csv(tables / "groups.csv").set_index("what")["value"]
    assert groups["groups (τ = 1)"] == "[toy_a] → [toy_b] → [toy_gen]"


@pytest.mark.integration
def test_cpi_freezes_the_first_tasks_core_exactly(tmp_path, tiny_model_dir):
    """seq:cpi:A>B leaves every element of A's core at A's probe values, bit for bit."""
    import torch
    from safetensors.torch import load_file

    from spillover.models.deltas import DeltaState
    from spillover.models.load import load_model

    study = write_multitask_study(tmp_path, tiny_model_dir, extra="baselines: []\nkeep_models: true")
    summary, out = run_study(*load_study(study))
    assert summary.ok, summary.failed
    jobs = out / "jobs"
    (cores,) = jobs.glob("cores-*")
    idx = load_file(str(cores / "masks" / "toy_a.safetensors"))
    from spillover.engine.store import Store

    store = Store(out)
    try:
        rows = {j["name"]: j["id"] for j in store.jobs()}
        # full fine-tunes are stored as bf16 deltas against θ0 (models.deltas): read θ0 + Δ back
        theta0 = dict(load_model(str(tiny_model_dir))[0].named_parameters())
        probe_a, seq, sft = (
            DeltaState(jobs / rows[name] / "model", theta0)
            for name in ("probe toy_a", "sequential cpi toy_a > toy_b", "sequential sft toy_a > toy_b")
        )
    finally:
        store.close()
    moved_elsewhere = False
    for name, i in idx.items():
        assert torch.equal(seq[name].flatten()[i], probe_a[name].flatten()[i]), name
        moved_elsewhere |= not torch.equal(sft[name].flatten()[i], probe_a[name].flatten()[i])
    assert moved_elsewhere  # without isolation the same elements move


def test_multitask_study_refuses_lora(tmp_path, tiny_model_dir, capsys):
    """CPI-FT on a LoRA adapter would select, transplant and SLERP A and B separately (cross-terms in B·A):
    refused at validation, nothing written (tests/bad_input/test_cpi_lora.py covers the default method)."""
    train = "{method: lora, lora: {r: 2}, limit: 8, batch_size: 4, max_steps: 2, learning_rate: 0.05}"
    study = write_multitask_study(
        tmp_path, tiny_model_dir, train=train, tasks="[toy_a, toy_b]", extra="baselines: [joint]"
    )
    assert main(["run", str(study)]) == 2
    err = capsys.readouterr().err
    assert "train.method = 'lora'" in err and "method: full" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cpi": "{p: 0}"}, "cpi.p = 0"),
        ({"cpi": "{p: 120}"}, "cpi.p = 120"),
        ({"cpi": "{tau: 1.5}"}, "cpi.tau = 1.5"),
        ({"cpi": "{tau: -0.1}"}, "cpi.tau = -0.1"),
        ({"cpi": "{epsilon: -1}"}, "cpi.epsilon = -1"),
        ({"cpi": "{omega: 2}"}, "cpi.omega = 2"),
        ({"cpi": "{order: alphabetical}"}, "cpi.order"),
        ({"cpi": "{calibration: 0}"}, "cpi.calibration = 0"),
        ({"cpi": "{sweep: {p: [0.5, 0]}}"}, "core fraction p=0"),
        ({"cpi": "{sweep: {tau: [2]}}"}, "grouping threshold tau=2"),
        ({"cpi": "{colour: red}"}, "unknown key 'cpi.colour'"),
        ({"tasks": "[toy_a]"}, "tasks = ['toy_a']"),
        ({"tasks": "[toy_a, toy_a]"}, "tasks has duplicates"),
        ({"sequential": "[[toy_a, toy_c]]"}, "['toy_c'] not among the study's tasks"),
        ({"sequential": "[[toy_a, toy_a]]"}, "give two different tasks"),
        ({"sequential": "[[toy_a, toy_b, toy_gen]]"}, "give two different tasks"),
        ({"sequential": "[[toy_a, toy_b], [toy_b, toy_a]]"}, "already listed"),
        ({"extra": "baselines: [joint, joint]"}, "baselines has duplicates"),
        ({"extra": "baselines: [ensemble]"}, "baselines.0"),
        ({"train": "{mixture: {strategy: equal}}"}, "remove `train.mixture`"),
        ({"tasks": "[toy_a, sst3]", "sequential": "[]"}, "unknown task 'sst3'"),
    ],
)
def test_bad_multitask_study_exits_2_and_writes_nothing(tmp_path, tiny_model_dir, capsys, kwargs, message):
    study = write_multitask_study(tmp_path, tiny_model_dir, **kwargs)
    assert main(["run", str(study)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
