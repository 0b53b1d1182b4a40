"""Compiled training (`compile: true`, public `torch.compile` of the forward pass): same losses within bf16
noise as eager, the model itself left uncompiled, eager fallback when compiling fails, "auto" eager."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from spillover.models import compile as compile_mod
from spillover.models.adapters import apply_lora
from spillover.models.compile import Compiled, wants_compile
from spillover.models.load import Precision
from spillover.training import loop
from spillover.training.loop import train

pytestmark = pytest.mark.integration

BF16 = Precision(torch.device("cpu"), torch.bfloat16)


def losses(out_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in (out_dir / "train_log.jsonl").read_text().splitlines()]


def run(make_model, tokenizer, seqs, make_params, out_dir, compile_setting) -> list[float]:
    model = apply_lora(make_model(), r=4, seed=0)
    train(model, tokenizer, seqs, make_params(precision=BF16, max_steps=4, compile=compile_setting), out_dir)
    return losses(out_dir)


def test_compiled_training_matches_eager(make_model, tokenizer, toy_sequences, make_params, tmp_path):
    """LoRA under bf16 autocast: the compiled forward runs (dynamo traced a graph) and the loss curve is the
    eager one within bf16 rounding."""
    from torch._dynamo.utils import counters

    counters.clear()
    eager = run(make_model, tokenizer, toy_sequences, make_params, tmp_path / "eager", False)
    assert not counters["stats"]["unique_graphs"]
    compiled = run(make_model, tokenizer, toy_sequences, make_params, tmp_path / "compiled", True)
    assert counters["stats"]["unique_graphs"] >= 1
    assert compiled == pytest.approx(eager, rel=0.02)  # a different kernel schedule computing the same


def test_the_model_itself_stays_eager(tiny_model):
    """Only calls through the wrapper are compiled: the model's own forward passes and its state dict are
    untouched."""
    from torch._dynamo.utils import counters

    keys = list(tiny_model.state_dict())
    Compiled(tiny_model)
    counters.clear()
    with torch.no_grad():
        tiny_model(input_ids=torch.tensor([[1, 2, 3]]))
    assert not counters["stats"]["unique_graphs"] and list(tiny_model.state_dict()) == keys


def test_compile_failure_falls_back_to_eager(
    make_model, tokenizer, toy_sequences, make_params, tmp_path, monkeypatch, caplog
):
    def broken_backend(graph, example_inputs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(compile_mod, "BACKEND", broken_backend)
    eager = run(make_model, tokenizer, toy_sequences, make_params, tmp_path / "eager", False)
    with caplog.at_level(logging.WARNING, logger="spillover.models.compile"):
        fallback = run(make_model, tokenizer, toy_sequences, make_params, tmp_path / "fallback", True)
    assert fallback == eager  # bit for bit: every step ran eagerly
    assert len(caplog.records) == 1 and "training runs eagerly" in caplog.records[0].getMessage()


def test_only_an_explicit_true_compiles(tiny_model, make_params):
    assert wants_compile(True) and not wants_compile(False) and not wants_compile("auto")
    assert loop._compiled(tiny_model, make_params(precision=BF16)) is None  # the default, "auto": eager
    assert loop._compiled(tiny_model, make_params(precision=BF16, compile=False)) is None
    assert isinstance(loop._compiled(tiny_model, make_params(compile=True)), Compiled)


def test_compile_setting_does_not_change_the_fingerprint(make_params):
    assert make_params(compile=True).settings() == make_params(compile=False).settings()


@pytest.mark.slow  # ~90 s of compiling; the compiled-vs-eager loss check in CI is the test above
def test_a_one_row_batch_reuses_the_batch_graph(make_model, tokenizer, make_params, tmp_path):
    """5 sequences in batches of 4: the last batch has one row, which dynamo would compile a graph of its own
    for (it specialises size 1). It runs as two rows, the second one's loss masked out: the same loss and
    gradients, no graph beyond those of the first batch."""
    from torch._dynamo.utils import counters

    from training.conftest import make_toy_sequences

    seqs = make_toy_sequences(tokenizer, n=5)
    losses_by_setting, graphs = {}, {}
    for setting in (False, True):
        torch._dynamo.reset()  # graphs compiled by earlier tests would not count as new here
        counters.clear()
        model = apply_lora(make_model(), r=4, seed=0)
        params = make_params(precision=BF16, max_steps=None, epochs=1, compile=setting)
        result = train(model, tokenizer, seqs, params, tmp_path / str(setting))
        losses_by_setting[setting] = losses(tmp_path / str(setting))
        graphs[setting] = counters["stats"]["unique_graphs"]
    assert result.n_steps == 2 and result.n_tokens == sum(len(s.input_ids) - s.n_prompt for s in seqs)
    assert graphs[False] == 0 and graphs[True] >= 1
    assert losses_by_setting[True] == pytest.approx(losses_by_setting[False], rel=0.02)
