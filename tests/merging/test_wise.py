"""WiSE-FT against hand-computed values: the lerp, full-model interpolation in place, and LoRA scaling,
which must equal interpolating the merged weights exactly."""

from __future__ import annotations

import copy

import pytest
import torch

from spillover.errors import SpilloverError
from spillover.merging.wise import interpolate_, scale_adapter_, wise
from spillover.models.adapters import apply_lora


def test_wise_by_hand():
    ft, base = torch.tensor([4.0, -2.0]), torch.tensor([0.0, 2.0])
    assert wise(ft, base, 0.25).tolist() == [1.0, 1.0]  # 0.25·4 + 0.75·0; 0.25·(−2) + 0.75·2
    assert wise(ft, base, 1.0).tolist() == ft.tolist() and wise(ft, base, 0.0).tolist() == base.tolist()


def test_interpolate_full_model_in_place(tiny_model):
    base = copy.deepcopy(tiny_model)
    tuned = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(1.0)
    interpolate_(tuned, base, 0.3)
    for (name, p), q in zip(tuned.named_parameters(), base.parameters(), strict=True):
        assert torch.allclose(p, q + 0.3), name  # θ0 + α·(θ_ft − θ0) with θ_ft − θ0 = 1
    with pytest.raises(SpilloverError, match="alpha=1.5"):
        interpolate_(tuned, base, 1.5)


def test_scaled_lora_equals_interpolated_merge(tiny_model):
    base_weights = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    model = apply_lora(copy.deepcopy(tiny_model), r=4, alpha=8)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    merged_ft = {n: p.detach().clone() for n, p in copy.deepcopy(model).merge_and_unload().named_parameters()}
    assert scale_adapter_(model, 0.4) > 0
    merged_half = dict(model.merge_and_unload().named_parameters())
    changed = 0
    for name, w in merged_half.items():
        expected = 0.4 * merged_ft[name] + 0.6 * base_weights[name]
        assert torch.allclose(w, expected, atol=1e-6), name
        changed += not torch.equal(merged_ft[name], base_weights[name])
    assert changed > 0
    with pytest.raises(SpilloverError, match="no LoRA weights"):
        scale_adapter_(tiny_model, 0.5)
