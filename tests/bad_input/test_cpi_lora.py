"""CPI-FT refuses LoRA (issue #24.6): a multitask study with `train.method: lora`, written or left to the
default, is rejected at validation with one message naming the field, the value and what is allowed."""

from __future__ import annotations

import pytest
from tests.bad_input.conftest import expect_rejected, read_yaml, write_yaml


def _as_multitask(folder, train: dict) -> None:
    spec = read_yaml(folder / "study.yaml")
    for key in ("sources", "targets", "stats"):
        spec.pop(key, None)
    write_yaml(
        folder / "study.yaml", {**spec, "study": "multitask", "tasks": ["toy_a", "toy_b"], "train": train}
    )


@pytest.mark.parametrize("train", [{"method": "lora", "limit": 8}, {"limit": 8}], ids=["lora", "default"])
def test_multitask_study_refuses_lora(base_dir, capsys, train):
    folder = base_dir()
    _as_multitask(folder, train)
    expect_rejected(
        ["run", str(folder / "study.yaml")], folder / "out", capsys, "train.method = 'lora'", "method: full"
    )


def test_multitask_study_with_full_fine_tuning_passes_validation(base_dir):
    from spillover.studies.run import load_study

    folder = base_dir()
    _as_multitask(folder, {"method": "full", "limit": 8})
    load_study(folder / "study.yaml")  # validation only: no model is loaded (base_dir forbids it)
