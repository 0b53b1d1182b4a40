"""spillover as an lm-eval model (issue 27 item 2): `lm_eval --model spillover` resolves through lm-eval's
model registry, runs a local task and gives the scores spillover's own lm_eval: target gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.harness.conftest import MC, REPO, TASKS_DIR

from spillover.api import run_evaluation

pytestmark = pytest.mark.integration  # a subprocess importing torch, transformers and lm-eval


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, tiny_model_dir):
    """A LoRA adapter on the tiny model with non-zero B, so it changes the scores."""
    import torch

    from spillover.models.adapters import apply_lora, save_adapter
    from spillover.models.load import load_model

    model, _ = load_model(str(tiny_model_dir))
    model = apply_lora(model, r=4, alpha=8, target_modules=["q_proj", "v_proj"])
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return save_adapter(model, tmp_path_factory.mktemp("adapter"))


def test_lm_eval_cli_runs_the_spillover_model(tiny_model_dir, adapter_dir, tmp_path):
    lm_eval = Path(sys.executable).with_name("lm_eval")
    out = tmp_path / "lm-eval-out"
    args = f"pretrained={tiny_model_dir},adapter={adapter_dir},precision=fp32"
    cmd = [str(lm_eval), "--model", "spillover", "--model_args", args, "--tasks", MC]
    cmd += ["--include_path", str(TASKS_DIR), "--limit", "10", "--batch_size", "4", "--output_path", str(out)]
    cmd += ["--log_samples"]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (results_file,) = out.rglob("results_*.json")
    theirs = json.loads(results_file.read_text())["results"][MC]
    ours = run_evaluation(
        str(tiny_model_dir),
        [f"lm_eval:{MC}"],
        adapter=str(adapter_dir),
        lm_eval_include=[str(TASKS_DIR)],
        limit=10,
        precision="fp32",
        out_dir=tmp_path / "ours",
    )["tasks"][f"lm_eval:{MC}"]
    run_evaluation(  # the base model alone, for the check that the adapter acts
        str(tiny_model_dir),
        [f"lm_eval:{MC}"],
        lm_eval_include=[str(TASKS_DIR)],
        limit=10,
        precision="fp32",
        out_dir=tmp_path / "base",
    )
    assert theirs["acc,none"] == ours["value"]
    assert theirs["acc_norm,none"] == ours["beside"][0]["value"]
    (samples_file,) = out.rglob(f"samples_{MC}_*.jsonl")
    samples = sorted(
        (json.loads(x) for x in samples_file.read_text().splitlines()), key=lambda s: s["doc_id"]
    )
    per_row = _rows(tmp_path / "ours")
    theirs_lp = [float(r[0]) for s in samples for r in s["filtered_resps"]]  # logged as text
    assert theirs_lp == pytest.approx([o["logprob"] for r in per_row for o in r["option_scores"]], abs=1e-5)
    assert [o["logprob"] for r in _rows(tmp_path / "base") for o in r["option_scores"]] != [
        o["logprob"] for r in per_row for o in r["option_scores"]
    ]  # the adapter changes the scores, so the CLI's equal scores mean it loaded the adapter


def _rows(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / f"lm_eval:{MC}.jsonl").read_text().splitlines()]
