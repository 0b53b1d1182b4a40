"""Fixtures for the training tests: a toy supervised task as sequences, and fresh identical tiny models."""

from __future__ import annotations

import copy

import pytest
import torch

from spillover.data.collate import Sequence_
from spillover.models.load import Precision
from spillover.training.types import TrainParams

WORDS = {"yes": ["great", "lovely", "superb", "fine"], "no": ["awful", "bad", "dull", "poor"]}


@pytest.fixture()
def toy_sequences(tokenizer) -> list[Sequence_]:
    return make_toy_sequences(tokenizer)


def make_toy_sequences(tokenizer, n: int = 24) -> list[Sequence_]:
    """n sequences 'Review: a <word> film. Good?' → ' yes'/' no' + EOS, of varying prompt length."""
    out = []
    for i in range(n):
        label = "yes" if i % 2 else "no"
        ctx = tokenizer(
            f"Review: a {'very ' * (i % 3)}{WORDS[label][i % 4]} film. Good?", add_special_tokens=False
        )
        cont = tokenizer(f" {label}<|im_end|>", add_special_tokens=False)
        out.append(Sequence_(ctx["input_ids"] + cont["input_ids"], len(ctx["input_ids"])))
    return out


@pytest.fixture()
def make_model(tiny_model):
    """A factory of identical fresh tiny Llamas (fp32)."""
    template = copy.deepcopy(tiny_model)
    return lambda: copy.deepcopy(template)


FP32 = Precision(torch.device("cpu"), torch.float32)


def params(**overrides) -> TrainParams:
    base = dict(lr=1e-2, batch_size=4, max_steps=6, seed=0, precision=FP32)
    return TrainParams(**(base | overrides))


@pytest.fixture()
def make_params():
    return params
