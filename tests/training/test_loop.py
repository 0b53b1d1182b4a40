"""The training loop: accumulation, determinism, learning, exact resume, completion and fingerprint checks."""

from __future__ import annotations

import json

import pytest
import torch

from spillover.data.collate import pad_batch
from spillover.errors import SpilloverError
from spillover.models.adapters import apply_lora
from spillover.training.loop import _n_keep, train
from spillover.training.objectives import cross_entropy
from spillover.training.params import trainable
from spillover.training.regularizers import REGULARIZERS


@REGULARIZERS.register("test_sum")
def _sum_reg(model, init, weight: float) -> torch.Tensor:
    """weight · Σθ: adds exactly `weight` to every trainable gradient."""
    return weight * sum(p.sum() for p in trainable(model).values())


class GradCapture:
    """A StepHook that records the gradients the optimiser is about to use."""

    def __init__(self):
        self.grads: list[dict[str, torch.Tensor]] = []

    def before_optimizer_step(self, model, optimizer, step):
        self.grads.append({n: p.grad.clone() for n, p in trainable(model).items()})

    def after_optimizer_step(self, model, optimizer, step):
        pass


class Freeze:
    """A StepHook that freezes one tensor exactly (the seam parameter masks will use)."""

    def __init__(self, name):
        self.name, self.saved = name, None

    def before_optimizer_step(self, model, optimizer, step):
        p = trainable(model)[self.name]
        p.grad.zero_()
        self.saved = p.detach().clone()

    def after_optimizer_step(self, model, optimizer, step):
        with torch.no_grad():
            trainable(model)[self.name].copy_(self.saved)


def losses(result) -> list[float]:
    return [json.loads(line)["loss"] for line in result.log_path.read_text().splitlines()]


def test_accumulation_equals_one_big_batch(make_model, tokenizer, toy_sequences, make_params, tmp_path):
    seqs = toy_sequences[:8]
    grads = []
    for bs, accum in [(8, 1), (2, 4)]:
        hook = GradCapture()
        p = make_params(batch_size=bs, grad_accum=accum, max_steps=1)
        train(make_model(), tokenizer, seqs, p, tmp_path / f"{bs}x{accum}", hooks=[hook])
        grads.append(hook.grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=0, atol=1e-6)


def test_same_seed_same_losses_bit_for_bit(make_model, tokenizer, toy_sequences, make_params, tmp_path):
    p = make_params(max_steps=5)
    a = train(make_model(), tokenizer, toy_sequences, p, tmp_path / "a")
    b = train(make_model(), tokenizer, toy_sequences, p, tmp_path / "b")
    assert losses(a) == losses(b) and a.final_loss == b.final_loss
    c = train(make_model(), tokenizer, toy_sequences, make_params(max_steps=5, seed=1), tmp_path / "c")
    assert losses(c) != losses(a)


def _checkpointing(model) -> bool:
    """transformers' flag (renamed in 5.24; the old name warns)."""
    flag = getattr(type(model), "is_activation_checkpointing", None)
    return model.is_activation_checkpointing if flag is not None else model.is_gradient_checkpointing


class CheckpointingSeen(GradCapture):
    """A StepHook that records whether the model checkpoints its activations at each step."""

    def __init__(self, model):
        self.model, self.states = model, []

    def before_optimizer_step(self, model, optimizer, step):
        self.states.append(_checkpointing(self.model))


@pytest.mark.parametrize("lora", [True, False])
def test_gradient_checkpointing_gives_the_same_run_and_is_switched_off_after(
    make_model, tokenizer, toy_sequences, make_params, tmp_path, lora
):
    """Recomputed activations are the stored ones: the same losses and weights bit for bit (LoRA dropout's
    RNG state is restored for the recompute); the model leaves training without checkpointing or the
    embedding hook it adds, so a shared base model evaluates as before."""
    runs = []
    for on in (False, True):
        model = make_model()
        if lora:
            model = apply_lora(model, r=4, dropout=0.1)
        p = make_params(max_steps=3, gradient_checkpointing=on)
        base = model.get_base_model() if lora else model
        seen = CheckpointingSeen(base)
        result = train(model, tokenizer, toy_sequences, p, tmp_path / f"run-{lora}-{on}", hooks=[seen])
        assert seen.states == [on] * 3  # on while training
        assert not _checkpointing(base) and not getattr(base, "_require_grads_hooks", None)
        runs.append((losses(result), {n: t.detach().clone() for n, t in model.named_parameters()}))
    (plain, plain_w), (ckpt, ckpt_w) = runs
    assert ckpt == plain
    assert all(torch.equal(plain_w[n], ckpt_w[n]) for n in plain_w)
    with pytest.raises(SpilloverError, match="gradient_checkpointing"):
        make_params(gradient_checkpointing=True, compile=True)


@pytest.mark.parametrize("lora", [True, False])
def test_loss_decreases_on_toy_task(make_model, tokenizer, toy_sequences, make_params, tmp_path, lora):
    model = apply_lora(make_model(), r=8) if lora else make_model()
    p = make_params(max_steps=30, lr=5e-2 if lora else 1e-2, warmup_ratio=0.1)
    result = train(model, tokenizer, toy_sequences, p, tmp_path)
    curve = losses(result)
    first, last = sum(curve[:3]) / 3, sum(curve[-3:]) / 3
    assert len(curve) == 30 and result.n_steps == 30
    # the tiny model's small tied embeddings cap how sharp LoRA (which cannot touch them) can make the
    # logits, so LoRA only has to gain 0.4 nats; full fine-tuning must halve the loss
    assert last < first - 0.4 if lora else last < 0.5 * first
    assert result.artifact == tmp_path / ("adapter" if lora else "model") and result.artifact.is_dir()


@pytest.mark.parametrize("lora", [True, False])
def test_resume_is_exact(make_model, tokenizer, toy_sequences, make_params, tmp_path, lora):
    """9 steps straight vs 5 steps + crash (checkpoint at 3) + resume: same losses and weights bit for bit.
    3 epochs (re-bucketed), dropout and weight decay make the RNG and optimiser state matter."""

    def fresh():
        return apply_lora(make_model(), r=4, dropout=0.1) if lora else make_model()

    p = make_params(
        batch_size=4,
        grad_accum=2,
        max_steps=9,
        checkpoint_every=3,
        weight_decay=0.1,
        warmup_ratio=0.2,
        lr=3e-3,
    )
    straight_model = fresh()
    straight = train(straight_model, tokenizer, toy_sequences[:16], p, tmp_path / "straight")

    def crash(record):
        if record["step"] == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(fresh(), tokenizer, toy_sequences[:16], p, tmp_path / "resumed", progress=crash)
    assert sorted(x.name for x in (tmp_path / "resumed" / "checkpoints").iterdir()) == ["step-000003"]
    # what a kill (SIGKILL, power cut) may leave besides: a torn log line, a half-written checkpoint
    with (tmp_path / "resumed" / "train_log.jsonl").open("a") as f:
        f.write('{"step": 6, "total_st')
    (tmp_path / "resumed" / "checkpoints" / ".step-000006.tmp-killed").mkdir()
    resumed_model = fresh()
    resumed = train(resumed_model, tokenizer, toy_sequences[:16], p, tmp_path / "resumed")
    assert sorted(x.name for x in (tmp_path / "resumed" / "checkpoints").iterdir()) == ["step-000009"]

    assert losses(resumed) == losses(straight) and [
        json.loads(x)["step"] for x in resumed.log_path.read_text().splitlines()
    ] == list(range(1, 10))
    assert resumed.final_loss == straight.final_loss and resumed.n_tokens == straight.n_tokens
    a, b = trainable(straight_model), trainable(resumed_model)
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_finished_run_is_not_redone_and_mismatch_is_reported(
    make_model, tokenizer, toy_sequences, make_params, tmp_path
):
    trained = make_model()
    first = train(trained, tokenizer, toy_sequences, make_params(max_steps=2), tmp_path)
    log_before = first.log_path.read_text()
    model = make_model()
    again = train(model, tokenizer, toy_sequences, make_params(max_steps=2, log_every=5), tmp_path)
    assert (
        again == first and first.log_path.read_text() == log_before
    )  # not trained again, but the weights are loaded
    assert all(torch.equal(a, b) for a, b in zip(trained.parameters(), model.parameters(), strict=True))
    with pytest.raises(SpilloverError, match="use a new output folder"):
        train(make_model(), tokenizer, toy_sequences, make_params(max_steps=2, lr=1e-3), tmp_path)


def test_checkpoint_mismatch_is_reported(make_model, tokenizer, toy_sequences, make_params, tmp_path):
    def crash(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(
            make_model(), tokenizer, toy_sequences, make_params(checkpoint_every=1), tmp_path, progress=crash
        )
    with pytest.raises(SpilloverError, match=r"different settings.*new output folder"):
        train(make_model(), tokenizer, toy_sequences[:10], make_params(checkpoint_every=1), tmp_path)


def test_regularizer_gradient_is_added_once_per_step(
    make_model, tokenizer, toy_sequences, make_params, tmp_path
):
    grads = []
    for regs in [{}, {"test_sum": {"weight": 0.25}}]:
        hook = GradCapture()
        p = make_params(max_steps=1, grad_accum=3, regularizers=regs)
        result = train(make_model(), tokenizer, toy_sequences, p, tmp_path / str(len(regs)), hooks=[hook])
        grads.append(hook.grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name] - grads[0][name], torch.full_like(grads[0][name], 0.25))
    assert "reg/test_sum" in json.loads(result.log_path.read_text().splitlines()[0])


def test_hook_can_freeze_a_tensor_exactly(make_model, tokenizer, toy_sequences, make_params, tmp_path):
    model = make_model()
    name = "model.layers.0.mlp.up_proj.weight"
    before = trainable(model)[name].detach().clone()
    other = trainable(model)["model.layers.1.mlp.up_proj.weight"].detach().clone()
    train(
        model,
        tokenizer,
        toy_sequences,
        make_params(max_steps=3, weight_decay=0.5),
        tmp_path,
        hooks=[Freeze(name)],
    )
    assert torch.equal(trainable(model)[name], before)
    assert not torch.equal(trainable(model)["model.layers.1.mlp.up_proj.weight"], other)


def test_log_records(make_model, tokenizer, toy_sequences, make_params, tmp_path):
    seen = []
    p = make_params(max_steps=None, epochs=1, log_every=4, lr=0.1, warmup_ratio=0.5, schedule="constant")
    result = train(make_model(), tokenizer, toy_sequences, p, tmp_path, progress=seen.append)
    rows = [json.loads(x) for x in result.log_path.read_text().splitlines()]
    assert rows == [seen[3], seen[5]] and [r["step"] for r in seen] == [1, 2, 3, 4, 5, 6]
    assert [r["lr"] for r in seen] == pytest.approx([0.1 / 4, 0.2 / 4, 0.3 / 4, 0.1, 0.1, 0.1])
    n_target = sum(len(s.input_ids) - s.n_prompt for s in toy_sequences)  # one epoch: every target once
    assert sum(r["n_tokens"] for r in seen) == result.n_tokens == n_target
    n_input = sum(len(s.input_ids) for s in toy_sequences)
    assert sum(r["n_input_tokens"] for r in seen) == n_input
    keys = {
        "step",
        "loss",
        "lr",
        "n_tokens",
        "n_input_tokens",
        "tokens_per_s",
        "elapsed_s",
        "grad_norm",
        "token_acc",
    }
    assert keys <= set(rows[0])
    assert json.loads((tmp_path / "train_result.json").read_text())["n_steps"] == 6


def test_trimmed_logits_give_the_same_loss(tiny_model, toy_sequences):
    batch = pad_batch(toy_sequences[:5], pad_id=0)
    labels = batch["labels"]
    keep = _n_keep(labels)
    assert keep < labels.shape[1]
    with torch.no_grad():
        full = tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        part = tiny_model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep
        ).logits
    a = cross_entropy(full, labels)
    b = cross_entropy(part, labels[:, -keep:])
    assert a.n_tokens == b.n_tokens
    torch.testing.assert_close(a.loss_sum, b.loss_sum, rtol=0, atol=1e-5)


def test_bad_params_are_reported(make_params):
    with pytest.raises(SpilloverError, match="batch_size=0"):
        make_params(batch_size=0)
    with pytest.raises(SpilloverError, match="schedule='linear'"):
        make_params(schedule="linear")


def test_unknown_objective(make_model, tokenizer, toy_sequences, make_params, tmp_path):
    with pytest.raises(SpilloverError, match="unknown objective 'ce'"):
        train(make_model(), tokenizer, toy_sequences, make_params(objective="ce"), tmp_path)
