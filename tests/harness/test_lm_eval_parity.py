"""lm_eval:TASK targets score as lm-eval's own `hf` model does: same prompts, per-row log-likelihoods
within fp32 rounding, identical predictions and generated texts, equal metrics (issue 27 item 1)."""

from __future__ import annotations

import json

import pytest
from tests.harness.conftest import GEN, MC, TASKS_DIR, lm_eval_hf

from spillover.api import run_evaluation

pytestmark = pytest.mark.integration  # lm-eval builds tasks and datasets: seconds, not milliseconds


def _ours(model_dir, tmp_path, tasks, limit, shots=0) -> tuple[dict, dict[str, list[dict]]]:
    out = run_evaluation(
        str(model_dir),
        [f"lm_eval:{t}" for t in tasks],
        lm_eval_include=[str(TASKS_DIR)],
        limit=limit,
        shots=shots,
        precision="fp32",
        batch_size=4,
        out_dir=tmp_path,
    )
    rows = {
        t: [json.loads(line) for line in (tmp_path / f"lm_eval:{t}.jsonl").read_text().splitlines()]
        for t in tasks
    }
    return out["tasks"], rows


def _samples(theirs: dict, task: str, filter_name: str = "none") -> list[dict]:
    return sorted(
        (s for s in theirs["samples"][task] if s["filter"] == filter_name), key=lambda s: s["doc_id"]
    )


def test_multiple_choice_and_generation_match_lm_eval_hf(varied_model_dir, tmp_path, at_repo):
    ours, rows = _ours(varied_model_dir, tmp_path, [MC, GEN], limit=12)
    theirs = lm_eval_hf(varied_model_dir, [MC, GEN], limit=12)
    # multiple choice: every option's log-likelihood, the choice, acc and acc_norm
    for row, sample in zip(rows[MC], _samples(theirs, MC), strict=True):
        assert row["prompt"] == sample["arguments"][0][0]
        ours_lp = [o["logprob"] for o in row["option_scores"]]
        theirs_lp = [r[0] for r in sample["filtered_resps"]]
        assert ours_lp == pytest.approx(theirs_lp, abs=1e-4)
        assert row["metrics"]["acc"] == sample["acc"] and row["metrics"]["acc_norm"] == sample["acc_norm"]
    mc = ours[f"lm_eval:{MC}"]
    assert (mc["metric"], mc["value"], mc["n"]) == ("acc", theirs["results"][MC]["acc,none"], 12)
    assert [(b["metric"], b["value"]) for b in mc["beside"]] == [
        ("acc_norm", theirs["results"][MC]["acc_norm,none"])
    ]
    # generation: the same greedy text on every row, under both filters, and the same exact match
    texts = [s["filtered_resps"][0] for s in _samples(theirs, GEN)]
    assert [r["prediction"] for r in rows[GEN]] == texts
    assert len(set(texts)) > 3, f"the model should answer rows differently: {texts}"
    first_line = [s["filtered_resps"][0] for s in _samples(theirs, GEN, "first-line")]
    assert [r["metrics"]["exact_match,first-line"] for r in rows[GEN]] == [
        s["exact_match"] for s in _samples(theirs, GEN, "first-line")
    ]
    assert first_line  # the second filter ran on both sides
    gen = ours[f"lm_eval:{GEN}"]
    assert (gen["metric"], gen["value"]) == ("exact_match", theirs["results"][GEN]["exact_match,none"])
    assert gen["beside"][0]["metric"] == "exact_match,first-line"
    assert gen["beside"][0]["value"] == theirs["results"][GEN]["exact_match,first-line"]


def test_few_shot_prompts_are_lm_evals(varied_model_dir, tmp_path, at_repo):
    """--shots K is lm-eval's --num_fewshot K with its default few-shot seed: the same demonstrations."""
    ours, rows = _ours(varied_model_dir, tmp_path, [MC], limit=6, shots=2)
    theirs = lm_eval_hf(varied_model_dir, [MC], limit=6, shots=2)
    prompts = [s["arguments"][0][0] for s in _samples(theirs, MC)]
    assert [r["prompt"] for r in rows[MC]] == prompts
    assert all(p.count("Sentiment:") == 3 for p in prompts)  # two demonstrations, then the question
    assert ours[f"lm_eval:{MC}"]["shots"] == 2
    assert ours[f"lm_eval:{MC}"]["value"] == theirs["results"][MC]["acc,none"]
