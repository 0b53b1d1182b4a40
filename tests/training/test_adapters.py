"""LoRA adapters: PEFT-format save/load round trip, swapping several adapters on one base model."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import PeftModel

from spillover.errors import SpilloverError
from spillover.models.adapters import (
    activate,
    apply_lora,
    base_only,
    keep_adapter_sum_fp32,
    load_adapter,
    save_adapter,
    unload_adapter,
)

IDS = torch.tensor([[5, 17, 99, 3, 42, 7], [8, 8, 120, 64, 2, 1]])


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


def trained_adapter(base, seed: int, dropout: float = 0.0):
    """An adapter with non-zero B (a fresh LoRA is the identity), as training would leave it."""
    model = apply_lora(copy.deepcopy(base), r=4, dropout=dropout, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model.eval()


def test_apply_lora_freezes_base_and_is_seeded(tiny_model):
    a = apply_lora(copy.deepcopy(tiny_model), r=4, seed=3)
    b = apply_lora(copy.deepcopy(tiny_model), r=4, seed=3)
    trainable = [n for n, p in a.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any("mlp.down_proj" in n for n in trainable) and not any("lm_head" in n for n in trainable)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    torch.testing.assert_close(logits(a), logits(tiny_model), rtol=0, atol=0)  # B = 0 at init


def test_save_then_peft_from_pretrained_gives_identical_logits(tiny_model, make_model, tmp_path):
    tuned = trained_adapter(tiny_model, seed=1)
    expected = logits(tuned)
    assert not torch.equal(expected, logits(tiny_model))
    save_adapter(tuned, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    reloaded = PeftModel.from_pretrained(make_model(), str(tmp_path / "adapter"))
    assert torch.equal(logits(reloaded), expected)


def test_swap_adapters_on_one_base(tiny_model, make_model, tmp_path):
    base_logits = logits(tiny_model)
    want = {}
    for name, seed in [("a", 1), ("b", 2)]:
        tuned = trained_adapter(tiny_model, seed)
        want[name] = logits(tuned)
        save_adapter(tuned, tmp_path / name)
    model = load_adapter(make_model(), tmp_path / "a", name="a")
    model = load_adapter(model, tmp_path / "b", name="b")
    assert model.active_adapter == "b" and torch.equal(logits(model), want["b"])
    activate(model, "a")
    assert torch.equal(logits(model), want["a"])
    with base_only(model):
        assert torch.equal(logits(model), base_logits)
    assert torch.equal(logits(model), want["a"])
    assert not any(p.requires_grad for p in model.parameters())  # loaded for evaluation: frozen
    unload_adapter(model, "b")
    with pytest.raises(SpilloverError, match="no adapter named 'b'"):
        activate(model, "b")
    with pytest.raises(SpilloverError, match="already loaded"):
        load_adapter(model, tmp_path / "a", name="a")


def test_save_a_named_adapter_at_the_folder_root(tiny_model, make_model, tmp_path):
    tuned = trained_adapter(tiny_model, seed=4)
    expected = logits(tuned)
    save_adapter(tuned, tmp_path / "first")
    model = load_adapter(make_model(), tmp_path / "first", name="mine")
    save_adapter(model, tmp_path / "second")  # the active adapter, named "mine"
    assert (tmp_path / "second" / "adapter_model.safetensors").exists()
    assert torch.equal(logits(load_adapter(make_model(), tmp_path / "second")), expected)


def test_load_adapter_errors(tiny_model, tmp_path):
    with pytest.raises(SpilloverError, match="not a saved adapter"):
        load_adapter(tiny_model, tmp_path)
    with pytest.raises(SpilloverError, match="needs a model with LoRA adapters"):
        save_adapter(tiny_model, tmp_path / "x")


def test_small_adapter_survives_bf16_autocast(tiny_model):
    """A just-trained adapter's contribution is far below a bf16 ulp of the layer output: it must be added
    in fp32, or autocast training and evaluation would not see it. Only o_proj is adapted, so the adapted
    layer's input is the same with and without the adapter and its output difference is the adapter's."""
    model = apply_lora(copy.deepcopy(tiny_model), r=4, target_modules=["o_proj"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.fill_(1e-6)
    outputs = []
    layer = model.get_base_model().model.layers[0].self_attn.o_proj
    layer.register_forward_hook(lambda module, args, out: outputs.append(out.float()))

    def delta(autocast: bool) -> torch.Tensor:
        outputs.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits(model)
            with base_only(model):
                logits(model)
        return outputs[0] - outputs[1]

    exact = delta(False)
    assert exact.abs().min() > 0
    assert (delta(True) - exact).abs().max() < 0.05 * exact.abs().max()


def test_fp32_sum_leaves_the_base_model_untouched(tiny_model):
    """base_only and an unloaded model compute exactly like the plain model under autocast."""
    plain = copy.deepcopy(tiny_model)
    model = trained_adapter(tiny_model, seed=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = logits(plain)
        with base_only(model):
            assert torch.equal(logits(model), expected)
        assert not torch.equal(logits(model), expected)
        assert torch.equal(logits(model.unload()), expected)


def _outputs_and_grads(model, autocast: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits (under bf16 autocast or not) and the LoRA weights' gradients of their sum."""
    model.train()
    torch.manual_seed(0)  # the same dropout masks on both models
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(input_ids=IDS).logits
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    return out.detach(), list(torch.autograd.grad(out.float().sum(), lora))


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_lora_is_peft_own_model(tiny_model, dropout):
    """apply_lora is peft's `get_peft_model` with a seeded init: the same modules, classes and parameters,
    and without autocast (where the fp32 sum does nothing) bit-identical logits and LoRA gradients."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import Linear as LoraLinear

    ours = apply_lora(copy.deepcopy(tiny_model), r=4, dropout=dropout, seed=7)
    config = LoraConfig(
        task_type="CAUSAL_LM", r=4, lora_alpha=16, lora_dropout=dropout, target_modules="all-linear"
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        plain = get_peft_model(copy.deepcopy(tiny_model), config)
    assert {type(m) for m in ours.modules()} == {type(m) for m in plain.modules()}
    assert any(type(m) is LoraLinear for m in ours.modules())  # peft's own class, not a subclass
    with torch.no_grad():
        for (n, p), (m, q) in zip(ours.named_parameters(), plain.named_parameters(), strict=True):
            assert n == m and torch.equal(p, q)
            if "lora_B" in n:  # a trained adapter, not the identity
                g = torch.Generator().manual_seed(len(n))
                p.copy_(torch.randn(p.shape, generator=g))
                q.copy_(p)
    got, want = _outputs_and_grads(ours, False), _outputs_and_grads(plain, False)
    assert torch.equal(got[0], want[0])
    assert all(torch.equal(a, b) for a, b in zip(got[1], want[1], strict=True))


def test_fp32_sum_is_idempotent(tiny_model):
    """Calling keep_adapter_sum_fp32 again (load_adapter does, for every adapter) changes nothing."""
    model = trained_adapter(tiny_model, seed=6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        before = logits(model)
        keep_adapter_sum_fp32(model)
        keep_adapter_sum_fp32(model)
        assert torch.equal(logits(model), before)
