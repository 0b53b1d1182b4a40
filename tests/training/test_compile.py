"""Regional compilation of the decoder layers in training: same losses within bf16 noise as eager, only the
training forward compiled, eager fallback when compiling fails, and the "auto" rule."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from spillover.models import compile as compile_mod
from spillover.models.adapters import apply_lora
from spillover.models.compile import decoder_layers
from spillover.models.load import Precision
from spillover.training import loop
from spillover.training.loop import train

BF16 = Precision(torch.device("cpu"), torch.bfloat16)


def losses(out_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in (out_dir / "train_log.jsonl").read_text().splitlines()]


def run(make_model, tokenizer, seqs, make_params, out_dir, compile_setting) -> list[float]:
    model = apply_lora(make_model(), r=4, seed=0)
    train(model, tokenizer, seqs, make_params(precision=BF16, max_steps=4, compile=compile_setting), out_dir)
    assert all(layer._compiled_call_impl is None for layer in decoder_layers(model))  # eager again after
    return losses(out_dir)


def test_compiled_training_matches_eager(make_model, tokenizer, toy_sequences, make_params, tmp_path):
    """LoRA under bf16 autocast: the compiled layers run (dynamo traced a graph) and the loss curve is the
    eager one within bf16 rounding."""
    from torch._dynamo.utils import counters

    counters.clear()
    eager = run(make_model, tokenizer, toy_sequences, make_params, tmp_path / "eager", False)
    assert not counters["stats"]["unique_graphs"]
    compiled = run(make_model, tokenizer, toy_sequences, make_params, tmp_path / "compiled", True)
    assert counters["stats"]["unique_graphs"] >= 1
    # the traced graphs can go to AOTAutograd's on-disk cache (an autocast region inside would bypass it and
    # every process would re-trace, ~20 s on the embedded model)
    assert not counters["aot_autograd"]["autograd_cache_bypass"]
    assert compiled != eager  # a different kernel schedule...
    assert compiled == pytest.approx(eager, rel=0.02)  # ...computing the same thing


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


def test_auto_compiles_once_the_process_has_trained_enough(tiny_model, make_params, monkeypatch):
    n_params = sum(p.numel() for p in tiny_model.parameters())
    enough = loop.HOTNESS.threshold / (2 * n_params)  # tokens
    assert loop._compiled_layers(tiny_model, make_params(precision=BF16, compile=False), enough) is None
    assert loop._compiled_layers(tiny_model, make_params(), enough) is None  # fp32: nothing to fuse away
    assert loop._compiled_layers(tiny_model, make_params(compile=True), 1) is not None
    monkeypatch.setattr(loop.HOTNESS, "flop", 0.0)
    assert loop._compiled_layers(tiny_model, make_params(precision=BF16), enough * 0.6) is None
    assert loop._compiled_layers(tiny_model, make_params(precision=BF16), enough * 0.6) is not None  # hot now
    monkeypatch.setattr(loop.HOTNESS, "flop", 0.0)
    assert loop._compiled_layers(tiny_model, make_params(precision=BF16), enough) is not None  # one big run


def test_compile_setting_does_not_change_the_fingerprint(make_params):
    assert make_params(compile=True).settings() == make_params(compile=False).settings()


def test_a_one_row_batch_reuses_the_batch_graph(make_model, tokenizer, make_params, tmp_path):
    """5 sequences in batches of 4: the last batch has one row, which dynamo would compile a graph of its own
    for (it specialises size 1: another compile, ~100 s on a new machine). It runs as two rows, the second
    one's loss masked out: the same loss and gradients, no new graph."""
    from torch._dynamo.utils import counters

    from training.conftest import make_toy_sequences

    seqs = make_toy_sequences(tokenizer, n=5)
    losses_by_setting = {}
    for setting in (False, True):
        torch._dynamo.reset()  # graphs compiled by earlier tests would not count as new here
        counters.clear()
        model = apply_lora(make_model(), r=4, seed=0)
        params = make_params(precision=BF16, max_steps=None, epochs=1, compile=setting)
        result = train(model, tokenizer, seqs, params, tmp_path / str(setting))
        losses_by_setting[setting] = losses(tmp_path / str(setting))
    assert result.n_steps == 2 and result.n_tokens == sum(len(s.input_ids) - s.n_prompt for s in seqs)
    assert counters["stats"]["unique_graphs"] == 1  # one graph for every layer and both batch sizes
    assert losses_by_setting[True] == pytest.approx(losses_by_setting[False], rel=0.02)
