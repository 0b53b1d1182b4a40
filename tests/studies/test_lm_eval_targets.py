"""lm-evaluation-harness tasks as study targets (issue 27): `lm_eval:TASK` in a transfer study's `targets`
with `lm_eval_include:` — evaluated, compared and fingerprinted like any target — and refused everywhere
a study would train on or probe them."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from spillover.cli import main
from spillover.engine.store import Store
from spillover.evaluation.evaluate import evaluate_task
from spillover.harness.tasks import LmEvalTarget
from spillover.models.load import load_model, resolve_precision
from spillover.studies.run import load_study, run_study

pytest.importorskip(
    "lm_eval", reason="lm-evaluation-harness is not installed (pip install 'spillover[lm-eval]')"
)

LM_TASK = "toy_a_mc"
TARGET = f"lm_eval:{LM_TASK}"


def write_lm_task(folder, data, prompt: str = "Review: {{input}}\\nSentiment:") -> None:
    """A local-file lm-eval multiple_choice task over the toy study's sentiment test rows."""
    folder.mkdir(exist_ok=True)
    (folder / f"{LM_TASK}.yaml").write_text(f"""task: {LM_TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{prompt}"
doc_to_choice: ["negative", "positive"]
doc_to_target: "{{{{['negative', 'positive'].index(output)}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""")


@pytest.fixture()
def lm_study(make_study, tmp_path):
    study = make_study(
        sources="[toy_a]",
        targets=f"[toy_a, {TARGET}]",
        train="{limit: 16, batch_size: 4, max_steps: 2, learning_rate: 0.01}",
        extra="lm_eval_include: [lm_tasks]\n",  # relative to the study YAML's folder
    )
    write_lm_task(tmp_path / "lm_tasks", tmp_path / "a_test.jsonl")
    return study


@pytest.mark.integration
def test_lm_eval_target_in_a_transfer_study(lm_study, tmp_path, tiny_model_dir, tokenizer):
    kind, spec = load_study(lm_study)
    assert spec.lm_eval_include == [str(tmp_path / "lm_tasks")]
    summary, out = run_study(kind, spec)
    assert summary.ok
    tables = out / "tables"
    delta = pd.read_csv(tables / "delta.csv", index_col=0)
    assert list(delta.columns) == ["toy_a", TARGET]
    # the base model's score is lm-eval's task evaluated by spillover, as `spillover eval` gives it
    base, _ = load_model(str(tiny_model_dir), resolve_precision("fp32"), frozen=True)
    own = evaluate_task(base, tokenizer, LmEvalTarget(LM_TASK, (str(tmp_path / "lm_tasks"),)), limit=6)
    scores = pd.read_csv(tables / "scores.csv")
    cell = scores[(scores["model"] == "base") & (scores["target"] == TARGET)]
    assert cell["metric"].tolist()[0] == "acc" and cell["value"].tolist()[0] == pytest.approx(own.value)
    # its Δ is a paired comparison over the same 6 documents, like every cell's
    paired = pd.read_csv(tables / "delta_stats.csv")
    row = paired[paired["target"] == TARGET].iloc[0]
    assert row["n"] == 6 and row["metric"] == "acc" and 0 <= row["q"] <= 1
    stats = pd.read_csv(tables / "dataset_stats.csv", index_col="dataset")
    assert any(TARGET in name for name in stats.index)  # its documents' statistics, rendered by lm-eval

    # a changed prompt in the lm-eval YAML re-runs that target's jobs only
    write_lm_task(tmp_path / "lm_tasks", tmp_path / "a_test.jsonl", prompt="Text: {{input}}\\nLabel:")
    again, _ = run_study(*load_study(lm_study))
    store = Store(out)
    try:
        jobs = {j["id"]: j["name"] for j in store.jobs()}
        rerun = sorted(jobs[i] for i in again.done)
        base_eval = next(i for i in again.done if jobs[i] == f"eval base -> {TARGET}")
        first = json.loads((store.job_dir(base_eval) / "predictions.jsonl").open().readline())
    finally:
        store.close()
    assert rerun == sorted(
        ["analyse + report", f"eval base -> {TARGET}", f"eval toy_a -> {TARGET}", f"stats {TARGET} (test)"]
    )
    assert first["prompt"].startswith("Text: ")


INCLUDE = "lm_eval_include: [lm_tasks]\n"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"sources": f"[toy_a, {TARGET}]", "targets": "[toy_a]", "extra": INCLUDE},
            f"{TARGET}: an lm-eval task is a target only .*allowed only in `targets`",
        ),
        (
            {"sources": f"[toy_a, {TARGET}]", "extra": INCLUDE},
            f"sources\\[1\\]: {TARGET} is an lm-eval task: a target only",
        ),
        ({"extra": "lm_eval_include: [nowhere]\n"}, "lm_eval_include: .*nowhere: not a folder"),
        (
            {"train": f"{{max_steps: 2, eval_every: 1, eval_tasks: [{TARGET}]}}", "extra": INCLUDE},
            f"train.eval_tasks: {TARGET} is an lm-eval task",
        ),
        ({"targets": "[toy_a, lm_eval:toy_a_mcq]", "extra": INCLUDE}, f"did you mean '{TARGET}'"),
    ],
)
def test_misplaced_lm_eval_names_are_refused_before_any_work(make_study, tmp_path, capsys, settings, message):
    write_lm_task(tmp_path / "lm_tasks", tmp_path / "a_test.jsonl")
    study = make_study(**{"targets": f"[toy_a, {TARGET}]", **settings})
    assert main(["run", str(study)]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_lm_eval_targets_are_refused_by_kinds_that_train_on_their_tasks(tmp_path, capsys, tiny_model_dir):
    study = tmp_path / "mixture.yaml"
    study.write_text(f"""study: mixture
model: {tiny_model_dir}
output_dir: {tmp_path / "out"}
tasks: [sst2, {TARGET}]
mixtures: [{{name: equal, strategy: equal}}]
""")
    assert main(["run", str(study)]) == 2
    err = capsys.readouterr().err
    assert f"{TARGET}: an lm-eval task is a target only" in err and "not in a mixture study" in err, err
    assert not (tmp_path / "out").exists()
