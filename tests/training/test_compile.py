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


class FakeProbe:
    """Stands in for Inductor's `valid_vec_isa_list`: `__wrapped__` lists what the CPU reports, a call probes."""

    def __init__(self, reported: list[str], passing: list[str]):
        self.__wrapped__ = lambda: reported
        self.passing, self.probes = passing, 0

    def __call__(self) -> list[str]:
        self.probes += 1
        return self.passing


@pytest.fixture
def isa_env(tmp_path, monkeypatch):
    """Inductor's instruction-set probe and cache folder faked, its `vec_isa_ok` unset (and restored after)."""
    import platform

    from torch._inductor import config as inductor_config
    from torch._inductor import cpu_vec_isa
    from torch._inductor.runtime import cache_dir_utils

    old = inductor_config.cpp.vec_isa_ok  # a config proxy: monkeypatch cannot set it
    monkeypatch.setattr(cache_dir_utils, "cache_dir", lambda: str(tmp_path))
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")

    def install(reported: list[str], passing: list[str]) -> FakeProbe:
        probe = FakeProbe(reported, passing)
        monkeypatch.setattr(cpu_vec_isa, "valid_vec_isa_list", probe)
        return probe

    def new_process() -> bool | None:
        """Run the start-up step as a fresh process would; what it left in `vec_isa_ok`."""
        compile_mod.reuse_vec_isa_probe.cache_clear()
        inductor_config.cpp.vec_isa_ok = None
        compile_mod.reuse_vec_isa_probe()
        return inductor_config.cpp.vec_isa_ok

    yield install, new_process, tmp_path
    compile_mod.reuse_vec_isa_probe.cache_clear()
    inductor_config.cpp.vec_isa_ok = old


def test_the_instruction_set_probe_runs_in_the_first_process_only(isa_env):
    install, new_process, cache = isa_env
    sets = ["avx512 avx512_vnni amx_tile", "avx512", "avx2"]
    probe = install(sets, sets)
    assert new_process() is True  # probed, all passed: Inductor told so (the same setting as later processes)
    assert probe.probes == 1 and len(list(cache.glob("spillover-vec-isa-*.json"))) == 1
    assert new_process() is True and new_process() is True
    assert probe.probes == 1  # later processes read the record


def test_a_failed_instruction_set_leaves_inductor_probing(isa_env):
    install, new_process, _ = isa_env
    probe = install(["avx512 avx512_vnni amx_tile", "avx2"], ["avx2"])  # e.g. a compiler without AMX
    assert new_process() is None and new_process() is None  # Inductor probes and picks avx2 itself
    assert probe.probes == 1


def test_a_users_setting_or_a_surprise_wins(isa_env, monkeypatch):
    from torch._inductor import config as inductor_config
    from torch._inductor.runtime import cache_dir_utils

    install, new_process, cache = isa_env
    probe = install(["avx2"], ["avx2"])
    compile_mod.reuse_vec_isa_probe.cache_clear()
    inductor_config.cpp.vec_isa_ok = False  # TORCHINDUCTOR_VEC_ISA_OK=0 (the fixture restores it)
    compile_mod.reuse_vec_isa_probe()
    assert inductor_config.cpp.vec_isa_ok is False and probe.probes == 0 and not list(cache.iterdir())

    def unreadable() -> str:
        raise PermissionError("cache folder")

    monkeypatch.setattr(cache_dir_utils, "cache_dir", unreadable)
    assert new_process() is None  # no record possible: Inductor's default, and no error
