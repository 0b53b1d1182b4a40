"""A frozen base (LoRA, evaluation) keeps its weights in param_dtype: one exact copy, no per-layer storage
tricks. Under bf16 autocast the matmuls run in bf16; weight arithmetic reads θ0 from the same model."""

from __future__ import annotations

import json

import torch

from spillover.models.adapters import apply_lora, load_adapter, save_adapter
from spillover.models.load import Precision, load_model
from spillover.training.loop import train
from spillover.training.types import TrainParams

BF16 = Precision(torch.device("cpu"), torch.bfloat16)
FP32 = Precision(torch.device("cpu"), torch.float32)


def test_load_model_frozen_keeps_param_dtype_and_adapter_round_trip(tiny_model_dir, tiny_model, tmp_path):
    model, _ = load_model(str(tiny_model_dir), BF16, frozen=True)
    assert not any(p.requires_grad for p in model.parameters())
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # autocast does the bf16 matmuls
    trained = apply_lora(tiny_model.requires_grad_(False), r=2, seed=3)
    save_adapter(trained, tmp_path / "a")
    with_adapter = load_adapter(model, tmp_path / "a")
    saved = {n: p for n, p in trained.named_parameters() if "lora_" in n}
    loaded = {n: p for n, p in with_adapter.named_parameters() if "lora_" in n}
    assert saved.keys() == loaded.keys()
    assert all(p.dtype == torch.float32 and torch.equal(p, saved[n]) for n, p in loaded.items())


def test_lora_training_under_bf16_autocast_learns(make_model, tokenizer, toy_sequences, tmp_path):
    params = TrainParams(lr=1e-2, batch_size=4, max_steps=4, warmup_ratio=0.0, precision=BF16)
    model = apply_lora(make_model().requires_grad_(False), r=4, seed=0)
    result = train(model, tokenizer, toy_sequences, params, tmp_path)
    losses = [json.loads(line)["loss"] for line in result.log_path.read_text().splitlines()]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert losses[-1] < losses[0]


def test_study_weight_arithmetic_reads_the_exact_base(tiny_model_dir, tmp_path):
    """θ0 for weight arithmetic (WiSE-FT of a full fine-tune, CPI-FT's |θ − θ0|) is the study's one shared
    base: its weights are the checkpoint's, unrounded, also under bf16."""
    from spillover.config import StudySpec
    from spillover.engine.store import Store
    from spillover.studies.context import StudyContext

    spec = StudySpec(study="transfer", model=str(tiny_model_dir), output_dir=str(tmp_path), precision="bf16")
    ctx = StudyContext(spec, {}, Store(tmp_path))
    ctx.precision = BF16  # whatever the CPU supports: the bf16 path is the one under test
    reference, _ = load_model(str(tiny_model_dir), FP32)
    base = dict(ctx.base_model().named_parameters())
    assert all(torch.equal(base[n], p) for n, p in reference.named_parameters())
    assert not hasattr(ctx, "exact_base")  # no second copy of the model
