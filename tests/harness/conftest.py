"""Fixtures of the lm-evaluation-harness interop tests: the local lm-eval task folder (tests/fixtures/
lm_eval_tasks, data read relative to the repository root) and a tiny Llama whose greedy answers vary."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.conftest import make_tiny_llama

pytest.importorskip(
    "lm_eval", reason="lm-evaluation-harness is not installed (pip install 'spillover[lm-eval]')"
)

REPO = Path(__file__).resolve().parents[2]
TASKS_DIR = REPO / "tests" / "fixtures" / "lm_eval_tasks"
MC, GEN = "spillover_sst2_mc", "spillover_squad_gen"


@pytest.fixture()
def at_repo(monkeypatch):
    """The fixture tasks name their data files relative to the repository root, as lm-eval reads them."""
    monkeypatch.chdir(REPO)


@pytest.fixture(scope="session")
def varied_model_dir(tmp_path_factory, tokenizer):
    """A saved tiny Llama with weights large enough that greedy decoding does not repeat one token, so
    generated texts differ from row to row (a default-initialised one answers ':::' everywhere)."""
    model = make_tiny_llama(len(tokenizer), seed=3)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.35)
    # its EOS is the tokenizer's (LlamaConfig's default eos id 2 is an ordinary byte here: lm-eval's hf
    # keeps the text of a non-special EOS token in the answer, spillover drops it)
    for config in (model.config, model.generation_config):
        config.eos_token_id, config.bos_token_id = tokenizer.eos_token_id, tokenizer.bos_token_id
    path = tmp_path_factory.mktemp("varied-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def lm_eval_hf(model_dir: Path, tasks: list[str], limit: int, shots: int | None = None) -> dict:
    """lm-eval's own run of `tasks` with its `hf` model, in fp32 on the CPU, samples logged."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    return simple_evaluate(
        model="hf",
        model_args=f"pretrained={model_dir},dtype=float32",
        tasks=tasks,
        task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False),
        limit=limit,
        num_fewshot=shots,
        log_samples=True,
        bootstrap_iters=0,
        batch_size=4,
        device="cpu",
    )
