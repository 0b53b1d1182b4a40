"""A tiny transfer study on the tiny local Llama: three toy tasks (two classification, one generation) and
a factory writing the study YAML with any train/eval settings, for the study, crash and tracking tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import write_jsonl

TASKS = """tasks:
  - name: toy_a
    type: classification
    task_type: sentiment
    train: a_train.jsonl
    test: a_test.jsonl
    labels: [negative, positive]
    metric: accuracy
    instruction: Sentiment?
  - name: toy_b
    type: classification
    task_type: topic
    train: b_train.jsonl
    test: b_test.jsonl
    labels: [sport, money]
    metric: accuracy
  - name: toy_gen
    type: generation
    task_type: copy
    train: g_train.jsonl
    test: g_test.jsonl
    metric: rouge_l
    max_new_tokens: 6
"""

SOURCES = """
  - toy_a
  - task: toy_a
    transforms: [{name: mislabel, fraction: 1.0}]
  - toy_b"""
TRAIN = "{limit: 16, batch_size: 4, max_steps: 3, learning_rate: 0.01, checkpoint_every: 1}"


def _rows(labels, words, n):
    return [
        {"id": f"{labels[i % 2]}{i}", "input": f"{words[i % 2]} {i % 5}", "output": labels[i % 2]}
        for i in range(n)
    ]


def write_toy_study(
    folder: Path,
    model_dir: Path,
    *,
    sources: str = SOURCES,
    targets: str = "[toy_a, toy_b, toy_gen]",
    train: str = TRAIN,
    extra: str = "",
) -> Path:
    """Task data, tasks.yaml and study.yaml in `folder` (output to folder/out); returns the study YAML."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, labels, words in (
        ("a", ["negative", "positive"], ["awful", "great"]),
        ("b", ["sport", "money"], ["goal", "bank"]),
    ):
        write_jsonl(folder / f"{name}_train.jsonl", _rows(labels, words, 24))
        write_jsonl(folder / f"{name}_test.jsonl", _rows(labels, words, 8))
    gen = [
        {"id": str(i), "input": f"say {w}", "output": w}
        for i, w in enumerate(["cat", "dog", "sun", "sea"] * 4)
    ]
    write_jsonl(folder / "g_train.jsonl", gen)
    write_jsonl(folder / "g_test.jsonl", gen[:6])
    (folder / "tasks.yaml").write_text(TASKS)
    study = folder / "study.yaml"
    study.write_text(f"""study: transfer
model: {model_dir}
tasks_file: tasks.yaml
output_dir: {folder / "out"}
precision: fp32
sources: {sources}
targets: {targets}
train: {train}
eval: {{limit: 6, batch_size: 4}}
stats: {{sample: 8}}
{extra}""")
    return study


@pytest.fixture()
def make_study(tmp_path, tiny_model_dir):
    """`make_study(name="study", **settings)` writes a toy study in tmp_path/name (see `write_toy_study`)."""

    def make(name: str = ".", **settings) -> Path:
        return write_toy_study(tmp_path / name, tiny_model_dir, **settings)

    return make


@pytest.fixture()
def study_file(make_study):
    """Three sources (one a mislabelled control) × three targets, 3 training steps each."""
    return make_study()
