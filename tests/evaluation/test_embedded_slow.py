"""The embedded model on the built-in sst2 data (`pytest -m slow`): packed == naive, accuracy far above chance."""

from __future__ import annotations

import pytest
import torch

from spillover.data.tasks import TaskSpec, builtin_tasks, load_examples
from spillover.evaluation.evaluate import evaluate_task
from spillover.evaluation.scoring import encode_options, score_requests

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedded():
    from spillover.models.load import Precision, load_model

    return load_model("embedded", Precision(torch.device("cpu"), torch.float32))


@pytest.fixture(scope="module")
def raw_sst2() -> TaskSpec:
    sst2 = builtin_tasks()["sst2"]
    return TaskSpec(
        name="sst2_raw",
        type="classification",
        test=str(sst2.base_dir / sst2.test),
        input="Review: {input}\nSentiment:",
        labels=["negative", "positive"],
        metric="accuracy",
        chat_template=False,
    )


def test_packed_equals_naive_on_the_embedded_model(embedded):
    model, tokenizer = embedded
    task = builtin_tasks()["sst2"]
    requests = [encode_options(task, tokenizer, ex) for ex in load_examples(task, "test", limit=4)]
    packed = score_requests(model, requests, batch_size=4)
    with torch.inference_mode():
        for (ctx, options), scores in zip(requests, packed, strict=True):
            for option, s in zip(options, scores, strict=True):
                logprobs = torch.log_softmax(model(torch.tensor([ctx + option])).logits[0].float(), -1)
                naive = sum(logprobs[len(ctx) - 1 + k, t].item() for k, t in enumerate(option))
                assert s.logprob == pytest.approx(naive, abs=1e-3)


def test_raw_sst2_accuracy_well_above_chance(embedded, raw_sst2):
    model, tokenizer = embedded
    result = evaluate_task(model, tokenizer, raw_sst2, limit=200, batch_size=16)
    assert result.value >= 0.7
