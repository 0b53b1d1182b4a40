"""Training on a mixture with checkpoint probes: probes do not change training (bit-identical losses), and a
run killed between a probe and its checkpoint resumes to the same losses and probes, without evaluating
any cell twice or losing one. Also `spillover train` honouring `mixture:`."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from tests.studies.conftest import write_toy_study

from spillover.analysis.behaviour import DEFAULT_HEDGES
from spillover.api import run_training
from spillover.config import TrainSpec
from spillover.data.mixture import MixtureSettings, Schedule
from spillover.data.sft import build_multitask_sequences
from spillover.data.tasks import load_examples, load_task_file
from spillover.errors import SpilloverError
from spillover.evaluation.checkpoint_eval import CheckpointEvaluator, ProbeSettings, collect, style_references
from spillover.models.adapters import apply_lora
from spillover.training.loop import train
from spillover.training.mixture_plan import MixturePlan, plan_mixture

NAMES = ["toy_a", "toy_b", "toy_gen"]


class Crash(Exception):
    pass


class CrashAfter:
    """A hook placed after the evaluator: raises once the evaluator has probed `step` (before its checkpoint)."""

    def __init__(self, done: int):
        self.done = done

    def before_optimizer_step(self, model, optimizer, step):
        pass

    def after_optimizer_step(self, model, optimizer, step):
        if step + 1 == self.done:
            raise Crash


@pytest.fixture()
def setup(tmp_path, tokenizer, tiny_model):
    write_toy_study(tmp_path / "data", tmp_path)
    tasks = load_task_file(tmp_path / "data" / "tasks.yaml")
    parts = [(tasks[n], load_examples(tasks[n], "train", 12)) for n in NAMES]
    seqs = build_multitask_sequences(parts, tokenizer, 64)
    styles = style_references({t.name: ex for t, ex in parts})
    template = copy.deepcopy(tiny_model)

    def run(out, *, probes=True, crash_at=None):
        plan = MixturePlan(
            NAMES,
            [12, 12, 12],
            [len(s.input_ids) for s in seqs],
            Schedule("phases", ((0.6, 0.2, 0.2), (0.1, 0.1, 0.8)), (0.5, 1.0)),
            batch_size=3,
            grad_accum=2,
            seed=0,
            n_steps=6,
        )
        ev = CheckpointEvaluator(
            [tasks[n] for n in NAMES],
            tokenizer,
            ProbeSettings(4, 4, 3, DEFAULT_HEDGES),
            styles,
            out / "probes",
            every=2,
            n_steps=6,
        )
        hooks = ([ev] if probes else []) + ([CrashAfter(crash_at)] if crash_at else [])
        model = apply_lora(copy.deepcopy(template), r=4, alpha=8, dropout=0.2, seed=0)  # dropout uses the RNG
        from tests.training.conftest import params

        result = train(
            model, tokenizer, seqs, params(max_steps=6, checkpoint_every=2), out, hooks=hooks, plan=plan
        )
        return result, ev

    return run


def _losses(out):
    return [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.integration
def test_probes_change_nothing_in_training_and_resume_exactly(setup, tmp_path):
    plain, _ = setup(tmp_path / "plain", probes=False)
    full, ev = setup(tmp_path / "full")
    assert _losses(tmp_path / "plain") == _losses(tmp_path / "full")
    assert ev.n_probes == 3 * 3  # steps 2, 4, 6 × 3 tasks
    records = collect(tmp_path / "full" / "probes")
    assert [(r["step"], r["task"]) for r in records] == [(s, t) for s in (2, 4, 6) for t in NAMES]
    assert all({"hedge_rate", "format_fail_rate", "sounds_like"} <= set(r["behaviour"]) for r in records)
    log = json.loads((tmp_path / "full" / "train_log.jsonl").read_text().splitlines()[-1])
    assert sum(log[f"mix/{t}"] for t in NAMES) == 6 and log["epochs/toy_gen"] > 0

    # killed after probing step 4 but before checkpoint 4: the resumed run replays steps 3-4 from checkpoint 2
    with pytest.raises(Crash):
        setup(tmp_path / "crashed", crash_at=4)
    assert len(collect(tmp_path / "crashed" / "probes")) == 2 * 3
    resumed, ev = setup(tmp_path / "crashed")
    assert ev.n_probes == 3  # only step 6: step 4's finished probes are not redone
    assert _losses(tmp_path / "crashed") == _losses(tmp_path / "full")
    assert collect(tmp_path / "crashed" / "probes") == records
    for r in records:  # per-example predictions identical too
        rel = f"step-{r['step']:06d}/{r['task']}/predictions.jsonl"
        assert (tmp_path / "crashed" / "probes" / rel).read_text() == (
            tmp_path / "full" / "probes" / rel
        ).read_text()
    torch.testing.assert_close(
        torch.tensor(resumed.final_loss), torch.tensor(full.final_loss), rtol=0, atol=0
    )


def test_plan_mixture_from_a_mixture_section_by_hand():
    """ratios 1:3 mixed in every batch of 4: 1 + 3 sequences per step; `first_exhausted` runs until the first
    task is drawn twice (epochs 2) in expectation: b, 2 × 6 / 0.75 = 16 sequences = 4 steps (a alone
    would need 2 × 4 / 0.25 = 32)."""
    section = MixtureSettings(ratios={"a": 1, "b": 3}, sampling="batch", stop="first_exhausted")
    steps = plan_mixture(
        section, ["a", "b"], [4, 6], [5] * 10, batch_size=2, grad_accum=2, seed=0, epochs=2, max_steps=None
    )
    assert steps.n_steps == 4 and steps.counts.tolist() == [[1, 3]] * 4
    assert [(r["task"], r["sequences"], r["epochs"]) for r in steps.summary()] == [
        ("a", 4, 1.0),
        ("b", 12, 2.0),
    ]
    capped = plan_mixture(
        section, ["a", "b"], [4, 6], [5] * 10, batch_size=2, grad_accum=2, seed=0, epochs=2, max_steps=3
    )
    assert capped.n_steps == 3


def test_spillover_train_honours_the_mixture(tmp_path, tiny_model_dir):
    write_toy_study(tmp_path, tiny_model_dir)
    spec = TrainSpec(
        model=str(tiny_model_dir),
        tasks=["toy_a", "toy_gen"],
        tasks_file=str(tmp_path / "tasks.yaml"),
        output_dir=str(tmp_path / "run"),
        precision="fp32",
        limit=8,
        batch_size=4,
        max_steps=5,
        mixture={"interleave_probs": [0.25, 0.75], "sampling": "batch"},
    )
    summary = run_training(spec)
    mix = {r["task"]: r for r in summary["mixture"]}
    assert mix["toy_a"]["sequences"] == 5 and mix["toy_gen"]["sequences"] == 15  # 1 + 3 of every 4 slots
    assert mix["toy_gen"]["epochs"] == 15 / 8
    bad = spec.model_copy(
        update={
            "output_dir": str(tmp_path / "bad"),
            "mixture": spec.mixture.model_copy(update={"ratios": [1, 1, 1]}),
        }
    )
    with pytest.raises(SpilloverError, match="3 ratios for 2 tasks"):
        run_training(bad)
    assert not (tmp_path / "bad").exists()
