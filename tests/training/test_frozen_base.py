"""precision bf16: frozen linear weights stored in bf16 once give the same numbers as autocasting fp32 ones."""

from __future__ import annotations

import copy
import json

import torch

from spillover.models.adapters import apply_lora, load_adapter, save_adapter
from spillover.models.load import Precision, load_model, store_frozen_linears
from spillover.training.loop import train
from spillover.training.types import TrainParams

BF16 = Precision(torch.device("cpu"), torch.bfloat16)
FP32 = Precision(torch.device("cpu"), torch.float32)


def _frozen(model):
    model.requires_grad_(False)
    return model


def test_only_frozen_linears_are_converted(tiny_model):
    model = apply_lora(_frozen(tiny_model), r=2)
    head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    assert head.weight is embeddings.weight  # tied
    n = store_frozen_linears(model, BF16)
    dtypes = {name: p.dtype for name, p in model.named_parameters(remove_duplicate=False)}
    assert n == 2 * 7 + 1  # q k v o gate up down in each of 2 layers, and the head
    assert all(d == torch.float32 for name, d in dtypes.items() if "lora_" in name)
    assert dtypes["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"] == torch.bfloat16
    # the tied head gets its own rounded copy; the embeddings keep theirs (the residual stream stays fp32)
    assert head.weight.dtype == torch.bfloat16 and embeddings.weight.dtype == torch.float32
    assert torch.equal(head.weight, embeddings.weight.to(torch.bfloat16)) and not head.weight.requires_grad
    assert dtypes["base_model.model.model.norm.weight"] == torch.float32


def test_fp32_precision_converts_nothing(tiny_model):
    assert store_frozen_linears(_frozen(tiny_model), FP32) == 0
    assert {p.dtype for p in tiny_model.parameters()} == {torch.float32}


def test_bf16_storage_is_bit_identical_under_autocast(tiny_model):
    ids = torch.randint(0, 200, (3, 17))
    stored = copy.deepcopy(tiny_model)
    store_frozen_linears(_frozen(stored), BF16)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.inference_mode():
        expected, got = tiny_model(input_ids=ids).logits, stored(input_ids=ids).logits
    assert torch.equal(expected, got)


def test_lora_init_on_a_bf16_stored_base_is_not_rounded(make_model):
    plain = apply_lora(_frozen(make_model()), r=4, seed=0)
    base = _frozen(make_model())
    store_frozen_linears(base, BF16)
    stored = apply_lora(base, r=4, seed=0)
    assert stored.model.model.layers[0].mlp.up_proj.base_layer.weight.dtype == torch.bfloat16  # cast back
    adapters = [{n: p for n, p in m.named_parameters() if "lora_" in n} for m in (plain, stored)]
    assert adapters[0].keys() == adapters[1].keys()
    for n, a in adapters[0].items():
        assert a.dtype == adapters[1][n].dtype == torch.float32 and torch.equal(a, adapters[1][n]), n


def test_lora_training_on_a_bf16_stored_base_is_bit_identical(make_model, tokenizer, toy_sequences, tmp_path):
    params = TrainParams(lr=1e-2, batch_size=4, max_steps=4, warmup_ratio=0.0, precision=BF16)
    runs = []
    for i, store in enumerate((False, True)):
        base = _frozen(make_model())
        if store:
            store_frozen_linears(base, BF16)
        model = apply_lora(base, r=4, seed=0)
        result = train(model, tokenizer, toy_sequences, params, tmp_path / str(i))
        runs.append([json.loads(line)["loss"] for line in result.log_path.read_text().splitlines()])
        assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    assert runs[0] == runs[1]
    assert runs[1][-1] < runs[1][0]


def test_load_model_frozen_and_adapter_round_trip(tiny_model_dir, tiny_model, tmp_path):
    model, _ = load_model(str(tiny_model_dir), BF16, frozen=True)
    assert not any(p.requires_grad for p in model.parameters())
    assert model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    trained = apply_lora(_frozen(tiny_model), r=2, seed=3)
    save_adapter(trained, tmp_path / "a")
    with_adapter = load_adapter(model, tmp_path / "a")
    saved = {n: p for n, p in trained.named_parameters() if "lora_" in n}
    loaded = {n: p for n, p in with_adapter.named_parameters() if "lora_" in n}
    assert saved.keys() == loaded.keys()
    assert all(
        p.dtype == torch.float32 and torch.equal(p, saved[n]) for n, p in loaded.items()
    )  # not rounded
    full, _ = load_model(str(tiny_model_dir), BF16)  # not frozen: full fine-tuning keeps fp32
    assert {p.dtype for p in full.parameters()} == {torch.float32}


def test_study_weight_arithmetic_reads_an_exact_fp32_base(tiny_model_dir, tmp_path):
    """The study's shared base stores frozen linears in bf16 (exact under autocast), but θ0 for weight
    arithmetic (WiSE-FT of a full fine-tune, CPI-FT's |θ − θ0|) must be the unrounded weights."""
    from spillover.config import StudySpec
    from spillover.engine.store import Store
    from spillover.studies.context import StudyContext

    spec = StudySpec(study="transfer", model=str(tiny_model_dir), output_dir=str(tmp_path), precision="bf16")
    ctx = StudyContext(spec, {}, Store(tmp_path))
    ctx.precision = BF16  # whatever the CPU supports: the bf16 path is the one under test
    reference, _ = load_model(str(tiny_model_dir), FP32)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert dict(ctx.base_model().named_parameters())[name].dtype == torch.bfloat16
    exact = dict(ctx.exact_base().named_parameters())
    assert all(torch.equal(exact[n], p) for n, p in reference.named_parameters())
    assert ctx.exact_base() is ctx.exact_base()  # loaded once
