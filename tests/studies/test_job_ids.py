"""Study job ids cover what a job computes, not how fast or how often it logs: `train.compile`,
`train.log_every`, `train.checkpoint_every` and `eval.compile` are declared cache-neutral by the job kinds,
and the engine's one hashing policy leaves them out."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from spillover.engine.plan import Job, JobParams, hashed_params
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


def test_the_hashing_policy_leaves_out_exactly_the_declared_cache_neutral_fields():
    class Inner(BaseModel):
        speed: int = 0
        value: int = 0

    class Params(JobParams):
        cache_neutral = ("inner.speed", "fast")
        inner: Inner
        fast: bool = False
        slow: int = 0

    base = hashed_params(Params(inner=Inner()))
    assert base == {"inner": {"value": 0}, "slow": 0}
    assert hashed_params(Params(inner=Inner(speed=5), fast=True)) == base
    assert (
        Job("k", "n", Params(inner=Inner(speed=5), fast=True)).id == Job("k", "n", Params(inner=Inner())).id
    )
    assert Job("k", "n", Params(inner=Inner(value=1))).id != Job("k", "n", Params(inner=Inner())).id


def test_job_params_are_frozen_and_strict():
    class Params(JobParams):
        x: int

    params = Params(x=1)
    with pytest.raises(ValidationError):
        params.x = 2
    with pytest.raises(ValidationError):
        Params(x=1, y=2)
