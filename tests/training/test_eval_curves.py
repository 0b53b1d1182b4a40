"""`eval_every` / `eval_tasks` (issue 27 item 3): per-task score and validation loss at step 0, every N steps
and the last, in eval_curves.csv, TensorBoard and the report; training unchanged by the probes."""

from __future__ import annotations

import csv
import json
import logging

import pytest
import torch
from tests.studies.conftest import write_toy_study

from spillover.api import run_training
from spillover.config import TrainSpec
from spillover.data.sft import build_sequences
from spillover.data.tasks import load_examples, load_task_file
from spillover.evaluation.curves import COLUMNS, curve_metrics, probe_steps


@pytest.fixture()
def toy(tmp_path, tiny_model_dir):
    """spec(**changes) -> a TrainSpec on toy_a (LoRA with dropout: probes must leave the RNG alone)."""
    write_toy_study(tmp_path / "data", tiny_model_dir)

    def spec(name: str = "run", **changes) -> TrainSpec:
        base = dict(
            model=str(tiny_model_dir),
            tasks=["toy_a"],
            tasks_file=str(tmp_path / "data" / "tasks.yaml"),
            output_dir=str(tmp_path / name),
            precision="fp32",
            limit=16,
            batch_size=4,
            max_steps=4,
            learning_rate=0.01,
            lora={"r": 4, "alpha": 8, "dropout": 0.2},
            eval_every=2,
            eval_tasks=["toy_a", "toy_b"],
            eval_limit=4,
        )
        return TrainSpec(**(base | changes))

    return spec


def _rows(folder) -> list[dict]:
    with (folder / "eval_curves.csv").open() as f:
        return list(csv.DictReader(f))


def _losses(folder) -> list[float]:
    return [json.loads(line)["loss"] for line in (folder / "train_log.jsonl").read_text().splitlines()]


def _hand_val_loss(model_dir, task, tokenizer, limit: int) -> float:
    """Mean target-token cross-entropy of the untuned model on the task's first `limit` test rows, by hand."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    total, count = 0.0, 0
    for s in build_sequences(task, tokenizer, load_examples(task, "test", limit), 256):
        ids = torch.tensor([s.input_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].double()
        targets = ids[0, s.n_prompt :]
        nll = torch.nn.functional.cross_entropy(logits[s.n_prompt - 1 : -1], targets, reduction="sum")
        total, count = total + float(nll), count + len(targets)
    return total / count


def test_probe_steps():
    assert probe_steps(2, 4) == [0, 2, 4]
    assert probe_steps(3, 7) == [0, 3, 6, 7]
    assert probe_steps(10, 4) == [0, 4]


def test_train_with_eval_every_writes_curves_and_the_report_plots_them(toy, tmp_path, tokenizer):
    spec = toy(eval_base=False)  # toy_b: probed, not trained on
    summary = run_training(spec)
    out = tmp_path / "run"
    rows = _rows(out)
    assert list(rows[0]) == COLUMNS
    keys = [(int(r["step"]), r["task"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys))
    metrics = {task: [m for s, t, m in keys if t == task and s == 0] for task in ("toy_a", "toy_b")}
    assert metrics["toy_a"][0] == "accuracy" and len(metrics["toy_a"]) > 1  # own metric, then beside
    assert metrics["toy_b"] == metrics["toy_a"]
    per_step = len(metrics["toy_a"]) + len(metrics["toy_b"])
    assert sorted({k[0] for k in keys}) == [0, 2, 4] and len(rows) == 3 * per_step
    assert all(int(r["n"]) == 4 and int(r["n_loss_tokens"]) > 0 for r in rows)

    loss = {(int(r["step"]), r["task"]): float(r["val_loss"]) for r in rows}
    tasks = load_task_file(tmp_path / "data" / "tasks.yaml")
    # step 0 is the starting point: a fresh LoRA adapter (B = 0) is the untuned model
    assert loss[0, "toy_a"] == pytest.approx(
        _hand_val_loss(spec.model, tasks["toy_a"], tokenizer, 4), rel=1e-5
    )
    assert loss[4, "toy_a"] < loss[2, "toy_a"] < loss[0, "toy_a"]  # trained on toy_a at lr 0.01
    assert loss[4, "toy_b"] != loss[0, "toy_b"]

    assert summary["eval_curves"] == str(out / "eval_curves.csv")
    assert len(summary["eval"]) == 2  # eval_tasks are still evaluated after training
    html = (out / "report.html").read_text()
    assert "Evaluation during training" in html
    for title in ("toy_a: accuracy vs step", "toy_a: validation loss vs step", "toy_b: accuracy vs step"):
        assert title in html
    assert "Training loss vs step" in html
    (out / "report.html").unlink()  # `spillover report` re-renders a training folder's report
    from spillover.cli import main

    assert main(["report", str(out)]) == 0 and (out / "report.html").read_text() == html


@pytest.mark.integration  # three / two training runs: the fast tier keeps the acceptance test
def test_probes_leave_training_unchanged_and_a_rerun_probes_nothing(toy, tmp_path, monkeypatch):
    run_training(toy("plain", eval_every=None, eval_tasks=[], eval_base=False))
    run_training(toy("probed", eval_tasks=[], eval_base=False))  # eval_tasks default: the training task
    assert _losses(tmp_path / "probed") == _losses(tmp_path / "plain")  # bit-identical (dropout 0.2)
    assert not (tmp_path / "plain" / "eval_curves.csv").exists()
    rows = _rows(tmp_path / "probed")
    assert {r["task"] for r in rows} == {"toy_a"}
    before = (tmp_path / "probed" / "eval_curves.csv").read_text()

    import spillover.evaluation.checkpoint_eval as checkpoint_eval

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run's probes were evaluated again")

    monkeypatch.setattr(checkpoint_eval, "probe", refuse)
    run_training(toy("probed", eval_tasks=[], eval_base=False))
    assert (tmp_path / "probed" / "eval_curves.csv").read_text() == before


@pytest.mark.integration  # three / two training runs: the fast tier keeps the acceptance test
def test_eval_every_set_after_the_run_finished_warns_of_the_missing_probes(toy, tmp_path, caplog):
    run_training(toy(eval_every=None, eval_base=False))
    with caplog.at_level(logging.WARNING):
        run_training(toy(eval_base=False))
    assert "no probes at steps 0, 2, 4" in caplog.text
    assert _rows(tmp_path / "run") == []


def test_curve_metrics_names_val_loss_and_metrics_per_task():
    rows = [
        {"task": "a", "metric": "accuracy", "value": 0.5, "val_loss": 1.25},
        {"task": "a", "metric": "macro_f1", "value": 0.4, "val_loss": 1.25},
        {"task": "g", "metric": "rouge_l", "value": None, "val_loss": None},
    ]
    assert curve_metrics(rows) == {"val/a/accuracy": 0.5, "val/a/macro_f1": 0.4, "val/a/loss": 1.25}


@pytest.mark.integration
def test_tensorboard_gets_the_curves_from_step_0(toy, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_training(toy(report_to=["tensorboard"], eval_tasks=["toy_a", "toy_gen"], eval_base=False))
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard" / "train"))
    events.Reload()
    rows = _rows(tmp_path / "run")
    for task, metric in (("toy_a", "accuracy"), ("toy_gen", "rouge_l")):
        expect = [
            (int(r["step"]), float(r["value"]), float(r["val_loss"])) for r in rows if r["metric"] == metric
        ]
        scores = events.Scalars(f"val/{task}/{metric}")
        losses = events.Scalars(f"val/{task}/loss")
        assert [e.step for e in scores] == [e.step for e in losses] == [0, 2, 4]
        assert [e.value for e in scores] == pytest.approx([v for _, v, _ in expect], abs=1e-6)
        assert [e.value for e in losses] == pytest.approx([v for _, _, v in expect], rel=1e-6)
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]


@pytest.mark.integration
def test_a_study_whose_train_block_sets_eval_every_reports_the_curves(tmp_path, tiny_model_dir):
    """Through the shared study layer (StudyContext.train_sequences, report_job): one training job's curves in
    its folder, tables/eval_curves.csv and the report section."""
    import pandas as pd

    from spillover.studies.run import load_study, run_study

    train = (
        "{limit: 16, batch_size: 4, max_steps: 3, learning_rate: 0.01, eval_every: 2, eval_tasks: [toy_b]}"
    )
    study = write_toy_study(
        tmp_path / "study", tiny_model_dir, sources="[toy_a]", targets="[toy_a]", train=train
    )
    summary, out = run_study(*load_study(study))
    assert summary.ok
    curves = pd.read_csv(out / "tables" / "eval_curves.csv")
    assert set(curves["model"]) == {"train toy_a"} and set(curves["task"]) == {"toy_b"}
    assert sorted(set(curves["step"])) == [0, 2, 3]
    assert curves.groupby("step")["val_loss"].first().nunique() == 3
    html = (out / "report.html").read_text()
    assert "Evaluation during training" in html and "toy_b: validation loss vs step" in html
