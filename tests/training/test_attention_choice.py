"""Short CPU training batches run eager attention, long ones sdpa; the model's setting is restored."""

from __future__ import annotations

import pytest
import torch

from spillover.data.collate import Sequence_, pad_batch
from spillover.models import attention
from spillover.models.attention import attention_implementation, training_attention
from spillover.models.load import Precision
from spillover.training.loop import _forward_fn
from spillover.training.types import TrainParams

CPU = torch.device("cpu")


def test_rule_by_batch_times_width_squared():
    assert training_attention(CPU, 8, 128, "sdpa") == "eager"  # 8·128² is the bound
    assert training_attention(CPU, 8, 129, "sdpa") == "sdpa"
    assert training_attention(CPU, 32, 64, "sdpa") == "eager"
    assert training_attention(CPU, 33, 64, "sdpa") == "sdpa"
    assert training_attention(torch.device("cuda"), 1, 8, "sdpa") == "sdpa"  # GPUs keep their kernel
    assert training_attention(CPU, 1, 8, "flash_attention_2") == "flash_attention_2"  # a user's choice stays


def test_context_switches_and_restores_even_on_error(tiny_model):
    assert tiny_model.config._attn_implementation == "sdpa"
    with pytest.raises(RuntimeError), attention_implementation(tiny_model, "eager"):
        assert tiny_model.config._attn_implementation == "eager"
        raise RuntimeError
    assert tiny_model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize(("width", "expected"), [(12, "eager"), (200, "sdpa")])
def test_training_forward_uses_the_chosen_kernel_and_matches_the_other(
    tiny_model, monkeypatch, width, expected
):
    seen = []
    real = attention_implementation

    def spy(model, name):
        seen.append(name)
        return real(model, name)

    monkeypatch.setattr("spillover.training.loop.attention_implementation", spy)
    batch = pad_batch([Sequence_(list(range(1, width + 1)), width // 2)] * 8, 0)
    forward = _forward_fn(
        tiny_model, TrainParams(precision=Precision(CPU, torch.float32)), share_prefix=False
    )
    chosen, _ = forward(batch)
    assert seen == [expected] and tiny_model.config._attn_implementation == "sdpa"
    monkeypatch.setattr(attention, "EAGER_MAX_SCORES", 0 if expected == "eager" else 10**9)  # the other one
    other, _ = forward(batch)
    assert seen[1] != expected
    torch.testing.assert_close(chosen, other, rtol=1e-4, atol=1e-4)
