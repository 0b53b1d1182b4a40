"""evaluate_task end to end on the tiny model: results, predictions JSONL, k-shot demos from TRAIN only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spillover.data.tasks import TaskSpec, load_examples, load_task_file
from spillover.errors import SpilloverError
from spillover.evaluation import evaluate as evaluate_module
from spillover.evaluation import metrics
from spillover.evaluation.evaluate import evaluate_task, evaluate_tasks, results_to_json
from spillover.models.load import Precision
from spillover.registry import Registry


@pytest.fixture()
def toy_task(sentiment_task_file):
    return load_task_file(sentiment_task_file)["toy_sentiment"]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("shots", [0, 2])
def test_classification_end_to_end(tiny_model, tokenizer, toy_task, tmp_path, shots):
    path = tmp_path / "out" / "preds.jsonl"
    result = evaluate_task(tiny_model, tokenizer, toy_task, shots=shots, batch_size=3, predictions_path=path)
    records = read_jsonl(path)
    assert result.task == "toy_sentiment" and result.metric == "accuracy" and result.n == 8 == len(records)
    assert result.value == pytest.approx(sum(r["correct"] for r in records) / 8)
    assert result.ci_low <= result.value <= result.ci_high
    assert result.gold_distribution == {"negative": 4, "positive": 4}
    assert list(result.label_distribution) == ["negative", "positive"]  # zero counts listed too
    assert sum(result.label_distribution.values()) == 8
    assert 0.0 <= result.extra["acc_norm"] <= 1.0 and result.shots == shots
    pairs = np.array([(r["prediction_index"], r["gold_index"]) for r in records])
    assert [(m.metric, m.value) for m in result.beside] == [
        ("macro_f1", pytest.approx(metrics.macro_f1_of(pairs))),
        ("balanced_accuracy", pytest.approx(metrics.balanced_accuracy_of(pairs))),
    ]
    assert all(m.ci_low <= m.value <= m.ci_high for m in result.beside)
    assert result.predictions_path == str(path)
    assert [p.name for p in path.parent.iterdir()] == ["preds.jsonl"]  # no temp file left behind
    for r in records:
        assert r["correct"] == float(r["prediction"] == r["gold"])
        assert r["options"] == ["negative", "positive"] and len(r["option_scores"]) == 2
        best = max(range(2), key=lambda i: r["option_scores"][i]["logprob"])
        assert r["prediction"] == r["options"][best]
        assert len(r["demo_ids"]) == shots
        assert r["prompt"].count("<|im_start|>user") == shots + 1


def test_demonstrations_never_come_from_the_test_split(
    tiny_model, tokenizer, toy_task, tmp_path, monkeypatch
):
    train_ids = {e.id for e in load_examples(toy_task, "train")}
    test_ids = {e.id for e in load_examples(toy_task, "test")}
    pools = []
    real_sample = evaluate_module.sample_demos
    monkeypatch.setattr(
        evaluate_module,
        "sample_demos",
        lambda pool, *a, **k: pools.append(pool) or real_sample(pool, *a, **k),
    )
    path = tmp_path / "p.jsonl"
    evaluate_task(tiny_model, tokenizer, toy_task, shots=4, seed=1, predictions_path=path)
    assert pools and all({e.id for e in pool} == train_ids for pool in pools)
    demo_ids = {d for r in read_jsonl(path) for d in r["demo_ids"]}
    assert demo_ids <= train_ids and not demo_ids & test_ids


def test_demos_are_seeded(tiny_model, tokenizer, toy_task, tmp_path):
    runs = []
    for seed in (0, 0, 1):
        path = tmp_path / f"{len(runs)}.jsonl"
        evaluate_task(tiny_model, tokenizer, toy_task, shots=2, seed=seed, predictions_path=path)
        runs.append([r["demo_ids"] for r in read_jsonl(path)])
    assert runs[0] == runs[1] != runs[2]


def test_shots_without_a_train_split_is_a_clear_error(tiny_model, tokenizer, tmp_path):
    write_jsonl(tmp_path / "test.jsonl", [{"input": "a", "output": "yes"}])
    (tmp_path / "t.yaml").write_text(
        "tasks:\n  - {name: no_train, type: classification, test: test.jsonl, labels: ['no', 'yes'], metric: accuracy}\n"
    )
    task = load_task_file(tmp_path / "t.yaml")["no_train"]
    with pytest.raises(SpilloverError, match="no train split"):
        evaluate_task(tiny_model, tokenizer, task, shots=1)


def test_limit_autocast_and_training_mode_restored(tiny_model, tokenizer, toy_task):
    tiny_model.train()
    bf16 = Precision(torch.device("cpu"), torch.bfloat16)
    result = evaluate_task(tiny_model, tokenizer, toy_task, limit=3, precision=bf16)
    assert result.n == 3 and tiny_model.training


def test_generation_task_end_to_end(tiny_model, tokenizer, tmp_path):
    rows = [
        {"id": f"g{i}", "question": f"What is {i} + 1?", "output": f"It is {i + 1}.", "answer": str(i + 1)}
        for i in range(6)
    ]
    write_jsonl(tmp_path / "train.jsonl", rows[:3])
    write_jsonl(tmp_path / "test.jsonl", rows[3:])
    (tmp_path / "g.yaml").write_text(
        "tasks:\n"
        "  - name: toy_math\n"
        "    type: generation\n"
        "    train: train.jsonl\n"
        "    test: test.jsonl\n"
        "    input: 'Q: {question}'\n"
        "    metric: exact_match\n"
        "    answer_field: answer\n"
        "    extract: last_number\n"
        "    max_new_tokens: 5\n"
        "    stop: ['\\n\\n']\n"
    )
    task = load_task_file(tmp_path / "g.yaml")["toy_math"]
    results = evaluate_tasks(tiny_model, tokenizer, [task], predictions_dir=tmp_path / "preds", shots=1)
    [result] = results
    records = read_jsonl(tmp_path / "preds" / "toy_math.jsonl")
    assert result.n == 3 and result.label_distribution == {}
    assert [r["gold"] for r in records] == ["4", "5", "6"]
    assert all(r["n_tokens"] <= 5 and r["stop_reason"] in ("eos", "stop", "length") for r in records)
    assert result.value == pytest.approx(sum(r["score"] for r in records) / 3)
    summary = results_to_json(results)
    assert json.loads(json.dumps(summary))["tasks"]["toy_math"]["n"] == 3
    assert summary["tasks"]["toy_math"]["predictions_path"].endswith("toy_math.jsonl")


def test_multiple_choice_end_to_end(tiny_model, tokenizer, tmp_path):
    rows = [
        {"id": "m0", "q": "Sky colour?", "choices": ["blue", "green", "red"], "answer": "A"},
        {"id": "m1", "q": "Grass colour?", "choices": ["blue", "green"], "answer": 1},
        {"id": "m2", "q": "Blood colour?", "choices": ["red", "black", "white"], "answer": "red"},
    ]
    write_jsonl(tmp_path / "test.jsonl", rows)
    (tmp_path / "mc.yaml").write_text(
        "tasks:\n  - {name: mc, type: multiple_choice, test: test.jsonl, input: '{q}', choices: choices, "
        "target: answer, metric: accuracy, chat_template: false}\n"
    )
    task = load_task_file(tmp_path / "mc.yaml")["mc"]
    result = evaluate_task(tiny_model, tokenizer, task, predictions_path=tmp_path / "mc.jsonl")
    records = read_jsonl(tmp_path / "mc.jsonl")
    assert [r["gold"] for r in records] == ["blue", "green", "red"]
    assert result.gold_distribution == {"A": 2, "B": 1}
    assert sum(result.label_distribution.values()) == 3
    assert [len(r["option_scores"]) for r in records] == [3, 2, 3]


@pytest.fixture()
def metric_registry(monkeypatch):
    """A copy of the metric registry for one test: what the test registers is gone after it."""
    copy = Registry("metric")
    for name in metrics.METRICS:
        copy.register(name)(metrics.METRICS.get(name))
    monkeypatch.setattr(metrics, "METRICS", copy)
    return copy


def test_a_metric_registered_in_one_place_is_usable_in_task_specs_and_evaluation(
    tiny_model, tokenizer, tmp_path, metric_registry
):
    """Adding a metric is one `register_metric`: task files accept it, evaluation uses its scorer,
    aggregation, direction and gold, and task types it does not fit are refused."""

    @metrics.register_metric(
        "answer_length",
        kinds=("generation",),
        higher_is_better=False,
        aggregation=lambda scores: np.median(scores, axis=-1),
        requires={"answer_field": "the field with the reference answer"},
        gold=lambda example, task: len(example.row[task.answer_field]),
        aliases=("len",),
    )
    def answer_length(prediction, example, task):
        return float(abs(len(prediction) - len(example.row[task.answer_field])))

    rows = [{"id": f"g{i}", "question": f"Say {i}", "output": "x", "answer": "a" * i} for i in range(5)]
    write_jsonl(tmp_path / "test.jsonl", rows)
    spec = "tasks:\n  - {name: gen, type: generation, test: test.jsonl, input: '{question}', %s}\n"
    (tmp_path / "g.yaml").write_text(spec % "metric: len, answer_field: answer, max_new_tokens: 4")
    task = load_task_file(tmp_path / "g.yaml")["gen"]
    assert task.metric == "answer_length"  # stored under its name

    result = evaluate_task(tiny_model, tokenizer, task, predictions_path=tmp_path / "p.jsonl")
    records = read_jsonl(tmp_path / "p.jsonl")
    expected = [abs(len(r["prediction"]) - i) for i, r in enumerate(records)]
    assert [r["score"] for r in records] == expected
    assert [r["gold"] for r in records] == [0, 1, 2, 3, 4]
    assert result.metric == "answer_length" and result.higher_is_better is False
    assert result.value == float(np.median(expected))
    assert result.ci_low <= result.value <= result.ci_high

    (tmp_path / "g.yaml").write_text(spec % "metric: answer_length")
    with pytest.raises(SpilloverError, match="metric answer_length needs `answer_field`"):
        load_task_file(tmp_path / "g.yaml")
    with pytest.raises(
        ValueError,
        match=r"does not fit a classification task; use one of: accuracy, balanced_accuracy, macro_f1 \[",
    ):
        TaskSpec(name="c", type="classification", test="t.jsonl", labels=["a", "b"], metric="answer_length")


def test_the_copied_metric_registry_is_gone_after_the_test():
    assert "answer_length" not in metrics.METRICS
    with pytest.raises(ValueError, match="unknown metric 'answer_length'"):
        TaskSpec(name="g", type="generation", test="t.jsonl", metric="answer_length")
