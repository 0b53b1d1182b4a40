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
    load_adapter,
    save_adapter,
    unload_adapter,
)
from spillover.models.load import Precision, store_frozen_linears

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


def _outputs_and_grads(model, train: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits under bf16 autocast, and with `train` the LoRA weights' gradients of their sum (dropout on)."""
    model.train(train)
    torch.manual_seed(0)  # the same dropout masks on both paths
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.set_grad_enabled(train):
        out = model(input_ids=IDS).logits
    if not train:
        return out, []
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    return out.detach(), list(torch.autograd.grad(out.float().sum(), lora))


@pytest.mark.parametrize(
    "bf16_base, train, dropout",
    [(False, False, 0.0), (True, False, 0.0), (False, True, 0.0), (True, True, 0.0), (False, True, 0.3)],
)
def test_direct_lora_path_is_bit_identical_to_peft(tiny_model, monkeypatch, bf16_base, train, dropout):
    """Under autocast, adapted linears skip peft's forward (the base layer module is not even called) and
    give bit-identical logits and LoRA gradients, with and without dropout; without autocast peft's
    forward runs."""
    import spillover.models.adapters as adapters

    model = trained_adapter(tiny_model, seed=3, dropout=dropout)
    if bf16_base:
        store_frozen_linears(model, Precision(torch.device("cpu"), torch.bfloat16))
    base_layer = model.get_base_model().model.layers[0].mlp.down_proj.get_base_layer()
    calls = []
    base_layer.register_forward_hook(lambda *a: calls.append(1))
    direct = _outputs_and_grads(model, train)
    assert not calls
    monkeypatch.setattr(adapters, "_plain_adapter", lambda *a: None)  # every layer through peft's forward
    through_peft = _outputs_and_grads(model, train)
    assert calls
    assert torch.equal(direct[0], through_peft[0])
    assert all(torch.equal(a, b) for a, b in zip(direct[1], through_peft[1], strict=True))
    if not bf16_base:  # without autocast: peft's forward (a bf16-stored base needs autocast)
        monkeypatch.undo()
        calls.clear()
        logits(model)
        assert calls
