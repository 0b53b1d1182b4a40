"""`eval_every` / `eval_tasks` (probes during training): every bad value is one message naming the field, the
value and what is allowed, before a model is loaded or anything is written (`spillover train` and a study's
`train:` block)."""

from __future__ import annotations

import pytest
from tests.bad_input.conftest import expect_rejected, read_yaml, train_config, write_yaml


def _train(folder, model_dir, capsys, *needles, **changes) -> str:
    cfg = train_config(folder, str(model_dir))
    write_yaml(cfg, {**read_yaml(cfg), **changes})
    return expect_rejected(["train", str(cfg)], folder / "out", capsys, *needles)


def _study(folder, capsys, *needles, **train) -> str:
    spec = read_yaml(folder / "study.yaml")
    spec["train"].update(train)
    write_yaml(folder / "study.yaml", spec)
    return expect_rejected(["run", str(folder / "study.yaml")], folder / "out", capsys, *needles)


@pytest.mark.parametrize(
    ("changes", "needles"),
    [
        ({"eval_every": 0}, ("eval_every = 0", "greater than or equal to 1")),
        ({"eval_every": -3}, ("eval_every = -3", "greater than or equal to 1")),
        ({"eval_every": 2.5}, ("eval_every = 2.5", "valid integer")),
        ({"eval_every": "often"}, ("eval_every = 'often'", "valid integer")),
        (
            {"eval_every": 2, "eval_tasks": ["toy_a", "toy_c"]},
            ("eval_tasks: unknown task 'toy_c'", "did you mean", "available: ", "toy_gen"),
        ),
        ({"eval_every": 2, "eval_tasks": ["toy_a", "toy_a"]}, ("eval_tasks = ['toy_a', 'toy_a']", "twice")),
        ({"eval_every": 2, "eval_tasks": "toy_a"}, ("eval_tasks = 'toy_a'", "valid list")),
    ],
)
def test_train_config_probe_settings_are_checked(base_dir, tiny_model_dir, capsys, changes, needles):
    _train(base_dir(), tiny_model_dir, capsys, *needles, **changes)


def test_probe_rows_are_checked_before_training(base_dir, tiny_model_dir, capsys):
    """The training task is probed by default: its test rows (up to eval_limit) are read first."""
    folder = base_dir()
    lines = (folder / "a_test.jsonl").read_text().splitlines()
    lines[1] = (
        lines[1]
        .replace('"output": "positive"', '"output": "meh"')
        .replace('"output": "negative"', '"output": "meh"')
    )
    (folder / "a_test.jsonl").write_text("\n".join(lines) + "\n")
    _train(folder, tiny_model_dir, capsys, "a_test.jsonl:2", "label 'meh'", eval_every=1, eval_tasks=[])


@pytest.mark.parametrize(
    ("train", "needles"),
    [
        ({"eval_every": 0}, ("train.eval_every = 0", "greater than or equal to 1")),
        ({"eval_tasks": ["toy_a"]}, ("train.eval_tasks = ['toy_a']", "needs eval_every")),
        (
            {"eval_every": 2, "eval_tasks": ["toy_x"]},
            ("train.eval_tasks: unknown task 'toy_x'", "available: "),
        ),
    ],
)
def test_study_train_block_probe_settings_are_checked(base_dir, capsys, train, needles):
    _study(base_dir(), capsys, *needles, **train)
