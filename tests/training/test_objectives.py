"""Objectives against hand-computed values; causal shift and masking; registry; regularisers."""

from __future__ import annotations

import math

import pydantic
import pytest
import torch

from spillover.config import TrainSettings
from spillover.data.collate import IGNORE
from spillover.errors import SpilloverError
from spillover.training.objectives import OBJECTIVES, count_targets, cross_entropy
from spillover.training.regularizers import REGULARIZERS, l2_to_init


def hand_logits() -> tuple[torch.Tensor, torch.Tensor]:
    """Row 0: position 0 predicts label 1 with p = 2/4, position 1 predicts label 2 with p = 1/3.
    Row 1: all labels ignored (prompt/padding)."""
    logits = torch.zeros(2, 3, 3)
    logits[0, 0] = torch.tensor([0.0, math.log(2.0), 0.0])
    logits[0, 2] = torch.tensor([100.0, -100.0, 0.0])  # last position predicts nothing: must be ignored
    logits[1] = torch.randn(3, 3) * 10
    labels = torch.tensor([[IGNORE, 1, 2], [IGNORE, IGNORE, IGNORE]])
    return logits, labels


def test_cross_entropy_matches_hand_computation():
    logits, labels = hand_logits()
    out = cross_entropy(logits, labels)
    assert out.n_tokens == 2 == count_targets(labels)
    assert out.loss_sum.item() == pytest.approx(math.log(2.0) + math.log(3.0), abs=1e-6)
    # argmax row 0 = 1 (correct); row 1 is a three-way tie → index 0 ≠ 2
    assert out.stats["token_acc"] == pytest.approx(0.5)


def test_cross_entropy_is_fp32_under_bf16_logits():
    logits, labels = hand_logits()
    out = cross_entropy(logits.to(torch.bfloat16).requires_grad_(), labels)
    assert out.loss_sum.dtype == torch.float32
    assert out.loss_sum.item() == pytest.approx(math.log(6.0), abs=1e-2)


def test_prompt_positions_get_no_gradient():
    logits, labels = hand_logits()
    logits.requires_grad_()
    cross_entropy(logits, labels).loss_sum.backward()
    assert logits.grad[0, 0].abs().sum() > 0 and logits.grad[0, 1].abs().sum() > 0
    assert logits.grad[0, 2].abs().sum() == 0 and logits.grad[1].abs().sum() == 0


def test_registry_lookup_and_error():
    assert OBJECTIVES.get("cross_entropy") is cross_entropy
    with pytest.raises(SpilloverError, match="did you mean 'cross_entropy'"):
        OBJECTIVES.get("cross_entropie")


def test_l2_to_init_by_hand():
    model = torch.nn.Linear(2, 1)
    model.bias.requires_grad_(False)  # frozen params are not regularised
    init = {"weight": model.weight.detach().clone()}
    with torch.no_grad():
        model.weight += torch.tensor([[1.0, 2.0]])
        model.bias += 100.0
    assert REGULARIZERS.get("l2_to_init") is l2_to_init
    assert l2_to_init(model, init, weight=0.5).item() == pytest.approx(0.5 * (1.0 + 4.0))


def test_l2_to_init_sums_in_fp32_and_checks_weight():
    model = torch.nn.Linear(1, 1, bias=False).to(torch.bfloat16)
    init = {"weight": model.weight.detach().clone()}
    with torch.no_grad():
        model.weight += 1.0
    value = l2_to_init(model, init, weight=2.0)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(2.0 * (model.weight.float() - init["weight"].float()).item() ** 2)
    with pytest.raises(
        pydantic.ValidationError, match="weight = -1: Input should be greater than or equal to 0"
    ):
        TrainSettings(regularizers={"l2_to_init": {"weight": -1}})  # checked at the config edge


def test_l2_to_init_gradient_is_2_lambda_delta():
    model = torch.nn.Linear(2, 1, bias=False)
    init = {"weight": model.weight.detach().clone()}
    with torch.no_grad():
        model.weight += torch.tensor([[0.5, -1.0]])
    l2_to_init(model, init, weight=0.1).backward()
    assert model.weight.grad[0].tolist() == pytest.approx([2 * 0.1 * 0.5, 2 * 0.1 * -1.0])
