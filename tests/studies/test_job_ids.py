"""Study job ids cover what a job computes, not how fast or how often it logs: `train.compile`,
`train.log_every`, `train.checkpoint_every` and `eval.compile` are outside them."""

from __future__ import annotations

from spillover.config import TrainSettings
from spillover.studies.transfer.plan import build_plan
from spillover.studies.transfer.spec import TransferStudySpec

FINGERPRINTS = {"a": {"train": "0", "test": "1"}, "b": {"test": "2"}}


def job_ids(**sections) -> dict[str, str]:
    spec = TransferStudySpec(
        study="transfer", output_dir="out", sources=["a"], targets=["a", "b"], **sections
    )
    return {job.name: job.id for job in build_plan(spec, FINGERPRINTS)}


def test_speed_settings_change_no_job_id():
    default = job_ids()
    assert job_ids(train={"compile": True, "log_every": 5, "checkpoint_every": 7}) == default
    assert job_ids(train={"compile": False}, eval={"compile": True}) == default


def test_result_settings_change_the_training_and_its_evaluations():
    default, changed = job_ids(), job_ids(train={"learning_rate": 1e-4})
    assert {name for name in default if default[name] != changed[name]} == {
        "train a",
        "eval a -> a",
        "eval a -> b",
        "analyse + report",
    }


def test_job_params_keep_the_ids_of_study_folders_made_before():
    """Before, a training job's params were the plain dump: with the speed settings at their defaults
    (the usual case) the new params are the same, so an upgraded study re-trains nothing."""
    assert TrainSettings().job_params() == TrainSettings().model_dump(mode="json")
    assert TrainSettings(compile=True, log_every=3).job_params() == TrainSettings().model_dump(mode="json")


def test_a_job_runs_with_the_study_speed_settings_of_now():
    params = TrainSettings(learning_rate=1e-4, compile=False).job_params()
    study = TrainSettings(compile=False, log_every=4, checkpoint_every=9, learning_rate=5e-5)
    settings = TrainSettings.for_job(params, study)
    assert (settings.compile, settings.log_every, settings.checkpoint_every) == (False, 4, 9)
    assert settings.learning_rate == 1e-4  # the job's own, result-affecting values stay
