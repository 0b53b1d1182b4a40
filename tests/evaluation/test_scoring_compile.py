"""Compiled log-likelihood scoring (`score_requests(compile=True)`, public `torch.compile`): the scores of
eager scoring within bf16 rounding, also reading a cached prefix; "auto" scores eagerly; eager fallback.
(`eval.compile` is not part of job ids: tests/studies/test_job_ids.py.)"""

from __future__ import annotations

import logging

import pytest
import torch

from spillover.evaluation import scoring
from spillover.evaluation.scoring import score_requests
from spillover.models import compile as compile_mod

pytestmark = pytest.mark.integration


@pytest.fixture()
def requests(tokenizer):
    texts = [
        ("Review: a great film. Sentiment:", [" positive", " negative"]),
        ("Q: 2+2?\nA:", [" 4", " four", " 5"]),
        ("A longer context, so that the batch needs padding on its right side. Label:", [" yes", " no"]),
    ]
    enc = lambda t: tokenizer(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    return [(enc(c), [enc(o) for o in opts]) for c, opts in texts]


def logprobs(model, requests, compile, batch_size=1) -> list[float]:
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        scored = score_requests(model, requests, batch_size=batch_size, compile=compile)
    return [s.logprob for row in scored for s in row]


def test_compiled_scoring_matches_eager(tiny_model, requests):
    """bf16 autocast: dynamo traced the model, and every option's log-prob is eager's within bf16 rounding.
    The batches are one row, then two (the one-row batch runs as two rows)."""
    from torch._dynamo.utils import counters

    lengths = [len(scoring.pack_row(c, o).input_ids) for c, o in requests]
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    assert [len(b) for b in scoring._token_batches(order, lengths, 1)] == [1, 2]
    counters.clear()
    eager = logprobs(tiny_model, requests, False)
    assert not counters["stats"]["unique_graphs"]
    compiled = logprobs(tiny_model, requests, True)
    assert counters["stats"]["unique_graphs"] >= 1
    assert compiled == pytest.approx(eager, rel=0.02, abs=0.05)


def test_compiled_scoring_reads_a_cached_prefix(tiny_model, requests, tokenizer):
    """Contexts sharing a prefix: the compiled forward reads its keys and values as `past_key_values`."""
    head = tokenizer("<|im_start|>system\nAnswer briefly.<|im_end|>\n", add_special_tokens=False)["input_ids"]
    prefixed = [(head + c, o) for c, o in requests]
    eager = logprobs(tiny_model, prefixed, False)
    compiled = logprobs(tiny_model, prefixed, True, batch_size=2)
    assert compiled == pytest.approx(eager, rel=0.02, abs=0.05)


def test_auto_scores_eagerly(tiny_model, requests, monkeypatch):
    made = []
    monkeypatch.setattr(scoring, "Compiled", lambda model, what: made.append(what))
    logprobs(tiny_model, requests, "auto")
    logprobs(tiny_model, requests, False)
    assert made == []  # only an explicit True compiles
    logprobs(tiny_model, requests, True)
    assert made == ["scoring"]


def test_failed_compile_scores_eagerly_and_is_not_retried(tiny_model, requests, monkeypatch, caplog):
    def broken_backend(graph, example_inputs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(compile_mod, "BACKEND", broken_backend)
    eager = logprobs(tiny_model, requests, False)
    with caplog.at_level(logging.WARNING, logger="spillover.models.compile"):
        first = logprobs(tiny_model, requests, True)
    assert first == eager  # bit for bit: every batch ran eagerly
    assert [r.getMessage().endswith("scoring runs eagerly") for r in caplog.records] == [True]  # one try
