"""Task specs, data loading and their error messages."""

from __future__ import annotations

import pytest
from tests.conftest import write_jsonl

from spillover.data.sources import read_rows
from spillover.data.tasks import builtin_tasks, load_examples, load_task_file, resolve_tasks
from spillover.errors import SpilloverError

TASK = """tasks:
  - name: t
    type: classification
    train: train.jsonl
    test: test.jsonl
    input: "Premise: {p}\\nHypothesis: {h}"
    target: label
    labels: [entail, contradict]
    metric: accuracy
"""


def _task_dir(tmp_path, rows, spec=TASK):
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "test.jsonl", rows)
    (tmp_path / "tasks.yaml").write_text(spec)
    return load_task_file(tmp_path / "tasks.yaml")["t"]


def test_template_input_and_gold(tmp_path):
    task = _task_dir(tmp_path, [{"id": "a", "p": "x", "h": "y", "label": "contradict"}])
    (ex,) = load_examples(task, "test")
    assert ex.text == "Premise: x\nHypothesis: y"
    assert ex.options == ("entail", "contradict") and ex.gold == 1 and ex.target == "contradict"


def test_missing_field_names_file_line_and_field(tmp_path):
    task = _task_dir(tmp_path, [{"p": "x", "h": "y", "label": "entail"}, {"p": "x", "label": "entail"}])
    with pytest.raises(SpilloverError, match=r"test\.jsonl:2: missing field 'h'"):
        load_examples(task, "test")


def test_label_outside_labels(tmp_path):
    task = _task_dir(tmp_path, [{"p": "x", "h": "y", "label": "maybe"}])
    with pytest.raises(
        SpilloverError,
        match=r"test\.jsonl:1: label 'maybe' is not one of the task's labels: entail, contradict",
    ):
        load_examples(task, "test")


def test_empty_split_and_missing_file(tmp_path):
    task = _task_dir(tmp_path, [])
    with pytest.raises(SpilloverError, match="test split is empty"):
        load_examples(task, "test")
    (tmp_path / "test.jsonl").unlink()
    with pytest.raises(SpilloverError, match="test data file not found"):
        load_examples(task, "test")


def test_invalid_json_and_utf8(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(SpilloverError, match=r"bad\.jsonl:2: invalid JSON"):
        read_rows("bad.jsonl", tmp_path, "train")
    (tmp_path / "bin.jsonl").write_bytes(b'{"a": "\xff"}\n')
    with pytest.raises(SpilloverError, match="not valid UTF-8"):
        read_rows("bin.jsonl", tmp_path, "train")


def test_csv_and_parquet_sources(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "d.csv").write_text("input,output\nhello,world\n")
    assert read_rows("d.csv", tmp_path, "train") == [
        (f"{tmp_path / 'd.csv'}:2", {"input": "hello", "output": "world"})
    ]
    pq.write_table(pa.table({"input": ["a"], "output": ["b"]}), tmp_path / "d.parquet")
    assert read_rows("d.parquet", tmp_path, "train")[0][1] == {"input": "a", "output": "b"}


def test_unknown_key_lists_allowed(tmp_path):
    (tmp_path / "tasks.yaml").write_text(TASK + "    colour: red\n")
    with pytest.raises(
        SpilloverError, match=r"tasks\[0\]: unknown key 'colour'; allowed keys: .*chat_template"
    ):
        load_task_file(tmp_path / "tasks.yaml")


def test_unknown_metric_suggests(tmp_path):
    (tmp_path / "tasks.yaml").write_text(TASK.replace("metric: accuracy", "metric: acuracy"))
    with pytest.raises(SpilloverError, match="unknown metric 'acuracy'; did you mean 'accuracy'"):
        load_task_file(tmp_path / "tasks.yaml")


def test_metric_checked_against_the_registry(tmp_path):
    rouge = TASK.replace("metric: accuracy", "metric: rouge_l")
    (tmp_path / "tasks.yaml").write_text(rouge)
    with pytest.raises(
        SpilloverError, match="metric 'rouge_l' does not fit a classification task; use one of: acc"
    ):
        load_task_file(tmp_path / "tasks.yaml")
    gen = "tasks:\n  - {name: g, type: generation, test: t.jsonl, metric: %s}\n"
    (tmp_path / "tasks.yaml").write_text(gen % "pass@1")
    with pytest.raises(SpilloverError, match="metric pass_at_1 needs `tests_field`"):
        load_task_file(tmp_path / "tasks.yaml")
    (tmp_path / "tasks.yaml").write_text(gen % "rougeL")
    assert load_task_file(tmp_path / "tasks.yaml")["g"].metric == "rouge_l"  # an alias, stored by name


def test_malformed_yaml_names_line(tmp_path):
    (tmp_path / "tasks.yaml").write_text("tasks:\n  - name: [unclosed\n")
    with pytest.raises(SpilloverError, match=r"tasks\.yaml:\d+:\d+: malformed YAML"):
        load_task_file(tmp_path / "tasks.yaml")


def test_unknown_task_suggests():
    with pytest.raises(SpilloverError, match="unknown task 'sst'; did you mean 'sst2'"):
        resolve_tasks(["sst"])


def test_builtin_suite_covers_required_kinds():
    tasks = builtin_tasks()
    kinds = {t.task_type for t in tasks.values()}
    assert {"sentiment", "nli", "paraphrase", "toxicity", "topic", "math", "code"} <= kinds
    assert kinds & {"summarisation", "reading_comprehension"}
    assert sum(t.task_type == "sentiment" for t in tasks.values()) >= 2
    for task in tasks.values():
        assert task.license and task.source, task.name
        assert load_examples(task, "test", limit=2)


def test_multiple_choice_gold_by_letter(tmp_path):
    spec = TASK.replace("type: classification", "type: multiple_choice").replace(
        "labels: [entail, contradict]", "choices: opts"
    )
    task = _task_dir(tmp_path, [{"p": "x", "h": "y", "label": "B", "opts": ["first", "second"]}], spec)
    (ex,) = load_examples(task, "test")
    assert ex.options == ("first", "second") and ex.gold == 1


def test_yaml_booleans_get_a_quoting_hint(tmp_path):
    (tmp_path / "tasks.yaml").write_text(TASK.replace("[entail, contradict]", "[yes, no]"))
    with pytest.raises(
        SpilloverError, match=r"labels\.0 = True: .*YAML reads yes/no/on/off as booleans; quote it"
    ):
        load_task_file(tmp_path / "tasks.yaml")
