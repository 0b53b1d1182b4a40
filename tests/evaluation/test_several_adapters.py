"""`run_evaluation` / `spillover eval --adapter a,b`: the base model is loaded once and every adapter is
evaluated on every task, with the same scores as one evaluation per adapter."""

from __future__ import annotations

import pytest

from spillover import api
from spillover.cli import main
from spillover.evaluation.predictions import read_predictions
from spillover.models.adapters import apply_lora, save_adapter
from spillover.models.load import Precision, load_model


@pytest.fixture()
def two_adapters(tiny_model_dir, tmp_path):
    import torch

    paths = []
    for seed in (1, 2):
        model, _ = load_model(str(tiny_model_dir), Precision(torch.device("cpu"), torch.float32), frozen=True)
        model = apply_lora(model, r=4, alpha=8, target_modules="all-linear", seed=seed)
        with torch.no_grad():  # LoRA's B starts at 0: give each adapter an effect of its own
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed))
        paths.append(save_adapter(model, tmp_path / "runs" / f"seed{seed}" / "adapter"))
    return paths


def test_several_adapters_load_the_base_once_and_match_one_at_a_time(
    two_adapters, tiny_model_dir, sentiment_task_file, tmp_path, monkeypatch
):
    kw = {"tasks": ["toy_sentiment"], "tasks_file": str(sentiment_task_file), "precision": "fp32"}
    alone = [
        api.run_evaluation(str(tiny_model_dir), adapter=str(a), out_dir=tmp_path / f"one{i}", **kw)
        for i, a in enumerate(two_adapters)
    ]
    loads = []
    real = api.load_model
    monkeypatch.setattr(api, "load_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    both = api.run_evaluation(str(tiny_model_dir), adapter=two_adapters, out_dir=tmp_path / "both", **kw)
    assert len(loads) == 1
    assert list(both["adapters"]) == ["seed1/adapter", "seed2/adapter"]  # the shortest unique path tails
    values = [r["value"] for r in both["rows"]]
    assert values == [a["tasks"]["toy_sentiment"]["value"] for a in alone]
    correct = [
        [r["correct"] for r in read_predictions(p / "toy_sentiment.jsonl")]
        for p in (tmp_path / "both" / "seed1" / "adapter", tmp_path / "both" / "seed2" / "adapter")
    ]
    assert correct[0] != correct[1] or values[0] == values[1]


def test_cli_prints_one_row_per_adapter_and_task(
    two_adapters, tiny_model_dir, sentiment_task_file, tmp_path, capsys
):
    argv = ["eval", "--model", str(tiny_model_dir), "--tasks", "toy_sentiment", "--precision", "fp32"]
    argv += ["--tasks-file", str(sentiment_task_file), "--adapter", ",".join(map(str, two_adapters))]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "toy_sentiment" in line]
    assert [line.split()[0] for line in lines] == ["seed1/adapter", "seed2/adapter"]


def test_a_bad_adapter_fails_before_loading_anything(two_adapters, tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "not-an-adapter"
    bad.mkdir()
    argv = ["eval", "--model", str(tiny_model_dir), "--tasks", "sst2", "--out", str(tmp_path / "out")]
    assert main([*argv, "--adapter", f"{two_adapters[0]},{bad}"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "adapter_config.json" in err
    assert not (tmp_path / "out").exists()
