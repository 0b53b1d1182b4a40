"""Shared pieces of the bad-input tests: a valid toy study and training config to mutate (no model may be
loaded while they run), YAML helpers, and `expect_rejected`, the one assertion every case ends in: exit
code 2, one `error:` message naming the file/field and the bad value, no traceback, nothing written.
"""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, settings
from tests.studies.conftest import write_toy_study

from spillover.cli import main

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
TRAIN_KEYS = [
    "limit",
    "max_len",
    "shots",
    "learning_rate",
    "epochs",
    "max_steps",
    "batch_size",
    "grad_accum",
    "warmup_ratio",
]


# ---- the valid bases -------------------------------------------------------------------------------------


@pytest.fixture()
def no_model_loading(monkeypatch):
    """Bad input must fail in validation: loading a model (or tokenizer) fails the test loudly."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was rejected")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", refuse)


@pytest.fixture()
def base_dir(tmp_path_factory, tiny_model_dir, no_model_loading):
    """`base_dir()` -> a fresh folder with a valid toy study (study.yaml, tasks.yaml, data, out/ absent)."""
    root = tmp_path_factory.mktemp("bad-input")

    def make() -> Path:
        return write_toy_study(Path(tempfile.mkdtemp(dir=root)), tiny_model_dir).parent

    return make


def read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def write_yaml(path: Path, data: Any) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def train_config(folder: Path, model_dir: str) -> Path:
    """A valid `spillover train` config on the toy study's task file."""
    cfg = folder / "train.yaml"
    write_yaml(
        cfg,
        {
            "model": model_dir,
            "tasks": ["toy_a"],
            "tasks_file": str(folder / "tasks.yaml"),
            "output_dir": str(folder / "out"),
            "precision": "fp32",
            "limit": 8,
            "max_steps": 1,
            "batch_size": 4,
            "eval_tasks": ["toy_b"],
            "eval_limit": 2,
        },
    )
    return cfg


def snapshot(folder: Path) -> dict[str, bytes] | None:
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def expect_rejected(argv: list[str], out: Path, capsys, *needles: str, before=None) -> str:
    """Run the CLI; assert exit 2, one clean `error:` message containing every needle, nothing written."""
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, f"exit {code} for {argv}; stderr:\n{err}"
    assert err.startswith("error: ") and "Traceback" not in err, err
    assert len(err) < 4000, f"the message should be short, got {len(err)} chars"
    for needle in needles:  # a needle is a string, or a tuple of alternatives
        options = needle if isinstance(needle, tuple) else (needle,)
        assert any(o in err for o in options), f"none of {options!r} in the message: {err}"
    assert snapshot(out) == before, f"{out} was written to"
    return err


def jsonl_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def to_csv(folder: Path, name: str) -> Path:
    rows = jsonl_rows(folder / f"{name}.jsonl")
    path = folder / f"{name}.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["id", "input", "output"])
        w.writeheader()
        w.writerows(rows)
    tasks = (folder / "tasks.yaml").read_text().replace(f"{name}.jsonl", f"{name}.csv")
    (folder / "tasks.yaml").write_text(tasks)
    return path
