"""benchmarks/_machine.py: what the side-by-side benchmarks count besides wall time."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _machine import PositionCounter, five_x, linear_params  # noqa: E402


def test_position_counter_counts_every_forward_position_only_while_active(tiny_model):
    with torch.no_grad():
        with PositionCounter(tiny_model) as counter:
            assert counter.first is None
            tiny_model(input_ids=torch.ones(2, 5, dtype=torch.long))
            first = counter.first
            tiny_model(input_ids=torch.ones(3, 4, dtype=torch.long))
        tiny_model(input_ids=torch.ones(1, 7, dtype=torch.long))  # hook removed
    assert counter.positions == 2 * 5 + 3 * 4
    assert first is not None and counter.first == first  # the first pass's start, kept


def test_linear_params_are_the_decoder_linears_without_lora(tiny_model):
    from spillover.models.adapters import apply_lora

    expected = sum(
        m.weight.numel() for m in tiny_model.model.layers.modules() if isinstance(m, torch.nn.Linear)
    )
    assert linear_params(tiny_model) == expected
    assert (
        linear_params(apply_lora(tiny_model, r=4, alpha=8, target_modules="all-linear", seed=0)) == expected
    )


def test_five_x_is_the_peak_fraction_a_fifth_of_the_competitors_time_needs():
    out = five_x(flops=2e12, competitor_seconds=50.0, peak_tflops=0.5)
    assert out == {"target_s": 10.0, "matmul_floor_s": 4.0, "mfu_needed": pytest.approx(0.4)}
