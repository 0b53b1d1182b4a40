"""Bounded disk (issue #23 item 6): a study deletes a full fine-tune's model once every job that reads it is
done, keeps LoRA adapters, keeps everything with `keep_models: true`, and re-trains a pruned model when a
later run has a new job that needs it."""

from __future__ import annotations

import pytest

from spillover.studies.pruning import PRUNED, model_dirs
from spillover.studies.run import load_study, run_study

pytestmark = pytest.mark.integration  # whole toy studies with full fine-tunes, run twice (~4 s each)

FULL = "{method: full, limit: 8, batch_size: 4, max_steps: 2, learning_rate: 0.01}"
LORA = "{limit: 8, batch_size: 4, max_steps: 2, learning_rate: 0.01}"


def _models(out):
    return [d for job in (out / "jobs").iterdir() for d in model_dirs(job)]


def test_full_models_are_pruned_once_evaluated_and_retrained_when_needed_again(make_study):
    study = make_study(sources="[toy_a]", targets="[toy_a, toy_b]", train=FULL)
    summary, out = run_study(*load_study(study))
    assert summary.ok, summary.failed
    assert _models(out) == []
    (train,) = [j for j in (out / "jobs").iterdir() if j.name.startswith("train-")]
    assert (train / PRUNED).exists() and (train / "train_result.json").exists()
    again, _ = run_study(*load_study(study))  # nothing new: nothing re-trained
    assert again.ok and not again.done
    # a new evaluation of the pruned model: its training runs again first
    more, _ = run_study(*load_study(study, overrides=["eval.limit=5"]))
    assert more.ok, more.failed
    assert sum(job.startswith("train-") for job in more.done) == 1
    assert _models(out) == []


def test_keep_models_keeps_them_and_adapters_are_always_kept(make_study):
    kept = make_study("kept", sources="[toy_a]", targets="[toy_a]", train=FULL, extra="keep_models: true")
    summary, out = run_study(*load_study(kept))
    assert summary.ok and len(_models(out)) == 1
    lora = make_study("lora", sources="[toy_a]", targets="[toy_a]", train=LORA)
    summary, out = run_study(*load_study(lora))
    assert summary.ok
    assert list((out / "jobs").glob("train-*/adapter/adapter_config.json"))
