"""SpilloverLM's request answers against hand-computed values on the tiny model, and lm_eval: name
resolution on a local task folder (fast: no lm-eval task index beyond that folder, no datasets)."""

from __future__ import annotations

import pytest
import torch
from tests.harness.conftest import MC, TASKS_DIR

from spillover.data.tasks import load_examples, resolve_tasks
from spillover.errors import SpilloverError
from spillover.harness.backend import SpilloverLM
from spillover.harness.tasks import LmEvalTarget


class _Request:  # lm-eval's Instance carries its arguments in .args
    def __init__(self, *args) -> None:
        self.args = args


def _logprob(model, ids: list[int], start: int) -> float:
    """Sum of log p(ids[t] | ids[:t]) for t >= start, from one plain forward pass."""
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    return sum(logp[t - 1, ids[t]].item() for t in range(start, len(ids)))


def test_loglikelihood_packs_options_and_matches_plain_forwards(tiny_model, tokenizer):
    lm = SpilloverLM.from_model(tiny_model, tokenizer)
    context = "Review: fine film\nSentiment:"
    answers = lm.loglikelihood(
        [_Request(context, " negative"), _Request(context, " positive"), _Request("", "ok")]
    )
    ctx = tokenizer.encode(context)
    for (logprob, _), option in zip(answers[:2], [" negative", " positive"], strict=True):
        assert logprob == pytest.approx(
            _logprob(tiny_model, ctx + tokenizer.encode(option), len(ctx)), abs=1e-4
        )
    # an empty context starts from the BOS token, as lm-eval's hf model does
    ids = [tokenizer.bos_token_id, *tokenizer.encode("ok")]
    assert answers[2][0] == pytest.approx(_logprob(tiny_model, ids, 1), abs=1e-4)


def test_loglikelihood_rolling_sums_every_token(tiny_model, tokenizer):
    lm = SpilloverLM.from_model(tiny_model, tokenizer)
    text = "a short text, scored whole"
    (total,) = lm.loglikelihood_rolling([_Request(text)])
    ids = [tokenizer.bos_token_id, *tokenizer.encode(text)]
    assert total == pytest.approx(_logprob(tiny_model, ids, 1), abs=1e-4)


def test_generate_until_cuts_at_the_stop_string_and_refuses_sampling(tiny_model, tokenizer):
    lm = SpilloverLM.from_model(tiny_model, tokenizer)
    (free,) = lm.generate_until([_Request("Q: 1+1\nA:", {"until": [], "max_gen_toks": 6})])
    assert len(tokenizer.encode(free)) <= 6
    stop = free[2:4] if len(free) >= 4 else free
    (cut,) = lm.generate_until([_Request("Q: 1+1\nA:", {"until": [stop], "max_gen_toks": 6})])
    assert cut == free.split(stop)[0]
    with pytest.raises(SpilloverError, match="greedily"):
        lm.generate_until([_Request("Q", {"do_sample": True, "temperature": 1.0})])


def test_lm_eval_names_resolve_in_the_include_folder():
    (target,) = resolve_tasks([f"lm_eval:{MC}"], lm_eval_include=[TASKS_DIR])
    assert target == LmEvalTarget(MC, (str(TASKS_DIR),)) and target.name == f"lm_eval:{MC}"
    with pytest.raises(SpilloverError, match="target only"):
        load_examples(target, "train")
