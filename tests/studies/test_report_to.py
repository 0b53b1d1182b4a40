"""`report_to`: training curves and evaluation scores in TensorBoard and MLflow, one run per trained model;
a crash and resume leaves one clean curve; a missing package fails before any work."""

from __future__ import annotations

import json
import sys

import pytest

from spillover.cli import main
from spillover.engine.store import Store
from spillover.engine.tracking import compose, flatten, run_folder
from spillover.errors import SpilloverError
from spillover.studies.run import load_study, run_study

ONE_BY_ONE = {
    "sources": "[toy_a]",
    "targets": "[toy_a]",
    "train": "{limit: 16, batch_size: 4, max_steps: 6, learning_rate: 0.01, checkpoint_every: 3}",
}


def _run_crashing_at_step_5_then_resume(study):
    """Interrupt the training job after step 5 was logged (checkpoint at 3), then run the study again."""

    def crash(record):
        if record["step"] == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(*load_study(study), progress=crash)
    summary, out = run_study(*load_study(study))
    assert summary.ok
    store = Store(out)
    try:
        (train,) = [j for j in store.jobs() if j["kind"] == "train"]
        own = [s for s in store.scores() if s["metric"] == "accuracy"]  # macro_f1 etc. sit beside it
        (score,) = [s for s in own if s["model"] == "toy_a"]
        (base,) = [s for s in own if s["model"] == "base"]
    finally:
        store.close()
    log = out / "jobs" / train["id"] / "train_log.jsonl"
    losses = [json.loads(line)["loss"] for line in log.read_text().splitlines()]
    assert len(losses) == 6
    return out, losses, score, base


@pytest.mark.integration
def test_tensorboard_gets_one_clean_curve_across_a_resume_and_the_scores(make_study):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    study = make_study(**ONE_BY_ONE, extra="report_to: [tensorboard]\n")
    out, losses, score, base = _run_crashing_at_step_5_then_resume(study)

    runs = out / "tensorboard"
    assert sorted(p.name for p in runs.iterdir()) == ["base", "train_toy_a"]
    trained = EventAccumulator(str(runs / "train_toy_a"))
    trained.Reload()
    tags = trained.Tags()["scalars"]
    assert {"train/loss", "train/lr", "train/tokens_per_s", "train/grad_norm"} <= set(tags)
    curve = trained.Scalars("train/loss")
    assert [e.step for e in curve] == [1, 2, 3, 4, 5, 6]  # step 4, logged before the crash, was purged
    assert [e.value for e in curve] == pytest.approx(losses, rel=1e-6)  # float32 in the event file
    (at_end,) = trained.Scalars("eval/toy_a/accuracy")
    assert at_end.step == 6 and at_end.value == pytest.approx(score["value"])
    untuned = EventAccumulator(str(runs / "base"))
    untuned.Reload()
    (at_start,) = untuned.Scalars("eval/toy_a/accuracy")
    assert at_start.step == 0 and at_start.value == pytest.approx(base["value"])


@pytest.mark.integration
def test_mlflow_gets_one_run_per_model_with_params_curves_and_scores(make_study, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"file:{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the quick store for a test; the default is sqlite
    study = make_study(**ONE_BY_ONE, extra="report_to: [mlflow]\n")
    out, losses, score, base = _run_crashing_at_step_5_then_resume(study)

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(out.name)
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["base", "train toy_a"]
    trained = runs["train toy_a"]
    assert trained.info.status == "FINISHED"
    assert trained.data.params["train.learning_rate"] == "0.01" and trained.data.params["task"] == "toy_a"
    curve = client.get_metric_history(trained.info.run_id, "train/loss")
    assert sorted((m.step, m.value) for m in curve) == list(zip(range(1, 7), losses, strict=True))
    assert trained.data.metrics["eval/toy_a/accuracy"] == score["value"]
    assert runs["base"].data.metrics["eval/toy_a/accuracy"] == base["value"]


@pytest.mark.parametrize("sink, module", [("tensorboard", "torch.utils.tensorboard"), ("mlflow", "mlflow")])
def test_a_missing_package_fails_before_any_work(make_study, monkeypatch, capsys, sink, module):
    monkeypatch.setitem(sys.modules, module, None)  # what `import` sees when the package is not installed
    study = make_study(**ONE_BY_ONE, extra=f"report_to: [{sink}]\n")
    package = sink
    with pytest.raises(
        SpilloverError, match=rf"report_to: {sink} needs the {package} package \(pip install {package}\)"
    ):
        run_study(*load_study(study))
    assert main(["run", str(study)]) == 2
    assert f"needs the {package} package" in capsys.readouterr().err
    assert not (study.parent / "out").exists()


def test_mlflow_default_store_needs_sqlalchemy(make_study, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setitem(sys.modules, "alembic", None)
    study = make_study(**ONE_BY_ONE, extra="report_to: [mlflow]\n")
    with pytest.raises(SpilloverError, match="needs sqlalchemy and alembic"):
        run_study(*load_study(study))
    assert not (study.parent / "out").exists()


def test_unknown_sink_is_a_validation_error(make_study, capsys):
    study = make_study(**ONE_BY_ONE, extra="report_to: [wandb]\n")
    assert main(["run", str(study)]) == 2
    assert "report_to" in capsys.readouterr().err


def test_flatten_run_folder_and_compose():
    params = {
        "model": "m",
        "train": {"lora": {"r": 8}, "lr": 0.1},
        "transforms": [{"name": "mislabel"}],
        "x": None,
    }
    assert flatten(params) == {
        "model": "m",
        "train.lora.r": "8",
        "train.lr": "0.1",
        "transforms": '[{"name": "mislabel"}]',
        "x": "null",
    }
    assert run_folder("train toy_a+mislabel(fraction=1.0)") == "train_toy_a+mislabel_fraction=1.0_"
    seen = []
    assert compose(None, None) is None and compose(seen.append, None) == seen.append
    compose(seen.append, lambda r: seen.append(r["step"] * 10))({"step": 1})
    assert seen == [{"step": 1}, 10]


@pytest.mark.integration
def test_spillover_train_reports_to_tensorboard(sentiment_task_file, tiny_model_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from spillover.api import run_training
    from spillover.config import TrainSpec

    spec = TrainSpec(
        model=str(tiny_model_dir),
        tasks=["toy_sentiment"],
        tasks_file=str(sentiment_task_file),
        output_dir=str(tmp_path / "run"),
        precision="fp32",
        max_steps=2,
        batch_size=4,
        eval_tasks=["toy_sentiment"],
        eval_limit=4,
        report_to=["tensorboard"],
    )
    summary = run_training(spec)
    events = {}
    for run in ("train", "base"):
        events[run] = EventAccumulator(str(tmp_path / "run" / "tensorboard" / run))
        events[run].Reload()
    assert [e.step for e in events["train"].Scalars("train/loss")] == [1, 2]
    (score,) = events["train"].Scalars("eval/toy_sentiment/accuracy")
    assert score.step == 2 and score.value == pytest.approx(summary["eval"][0]["value"])
    (base,) = events["base"].Scalars("eval/toy_sentiment/accuracy")
    assert base.step == 0 and base.value == pytest.approx(summary["eval_base"][0]["value"])
