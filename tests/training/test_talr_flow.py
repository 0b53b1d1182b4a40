"""TALR and FLOW against hand-computed values: τ from a batch (odd and even sequence counts), the floor,
the normalised variant (mean-1 weights), detached weights (gradient = Σ w·∂ℓ), FLOW's dataset-normalised
weights, the loop seam and its cache."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tests.training.test_objectives import hand_logits

from spillover.data.collate import IGNORE
from spillover.errors import SpilloverError
from spillover.training import flow as flow_module
from spillover.training.flow import WEIGHTS_FILE, flow_weights
from spillover.training.loop import train
from spillover.training.objectives import (
    OBJECTIVES,
    check_objective_params,
    flow,
    normalize_weights,
    talr,
    talr_weights,
    target_nll,
)


def test_talr_tau_is_the_median_of_sequence_means():
    nll = torch.tensor([1.0, 3.0, 2.0, 4.0, 4.0])
    rows = torch.tensor([0, 0, 1, 2, 2])  # sequence means 2, 2, 4 → median 2
    w, tau = talr_weights(nll, rows)
    assert tau == pytest.approx(2.0)
    expected = [math.exp(-0.5), math.exp(-1.5), math.exp(-1.0), math.exp(-2.0), math.exp(-2.0)]
    assert w.tolist() == pytest.approx(expected)
    # an even number of sequences: the mean of the two middle ones (means 2 and 5 → 3.5)
    _, tau_even = talr_weights(torch.tensor([1.0, 3.0, 5.0]), torch.tensor([0, 0, 3]))
    assert tau_even == pytest.approx(3.5)


def test_talr_floor_and_fixed_tau():
    nll = torch.tensor([1.0, 3.0, 2.0, 4.0, 4.0])
    rows = torch.tensor([0, 0, 1, 2, 2])
    w, _ = talr_weights(nll, rows, floor=0.3)  # e^-1.5 = 0.223 and e^-2 = 0.135 are raised to 0.3
    assert w.tolist() == pytest.approx([math.exp(-0.5), 0.3, math.exp(-1.0), 0.3, 0.3])
    w, tau = talr_weights(nll, rows, tau=1.0)
    assert tau == 1.0 and w.tolist() == pytest.approx([math.exp(-v) for v in nll.tolist()])
    assert torch.allclose(w, torch.exp(-nll) ** (1 / tau))  # = p^(1/τ)


def test_talr_loss_by_hand():
    logits, labels = hand_logits()  # one sequence: p = 1/2, 1/3 → τ = (ln 2 + ln 3)/2
    out = talr(logits, labels)
    tau = (math.log(2) + math.log(3)) / 2
    w = [0.5 ** (1 / tau), (1 / 3) ** (1 / tau)]
    assert out.n_tokens == 2
    assert out.loss_sum.item() == pytest.approx(w[0] * math.log(2) + w[1] * math.log(3), rel=1e-5)
    assert out.stats["talr/tau"] == pytest.approx(tau)
    assert out.stats["talr/w_mean"] == pytest.approx(sum(w) / 2, rel=1e-5)
    assert out.stats["talr/nll"] == pytest.approx(tau, rel=1e-5)
    floored = talr(logits, labels, floor=0.6)  # both weights (0.46, 0.30) are below 0.6
    assert floored.loss_sum.item() == pytest.approx(0.6 * math.log(6), rel=1e-5)
    assert floored.stats["talr/frac_floor"] == 1.0


def _three_token_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """hand_logits' row 0 (p = 1/2, 1/3) plus a row 1 with one target of p = 3/5."""
    logits, labels = hand_logits()
    logits[1] = 0.0
    logits[1, 0] = torch.tensor([math.log(3.0), 0.0, 0.0])  # p(label 0) = 3 / (3 + 1 + 1)
    labels[1] = torch.tensor([IGNORE, 0, IGNORE])
    return logits, labels


def test_normalize_weights_by_hand():
    assert normalize_weights(torch.tensor([1.0, 3.0])).tolist() == [0.5, 1.5]
    assert normalize_weights(torch.tensor([0.0, 0.0])).tolist() == [1.0, 1.0]
    assert normalize_weights(torch.tensor([])).numel() == 0


def test_talr_normalized_weights_have_mean_one_by_hand():
    logits, labels = _three_token_batch()
    # τ = 1: raw weights w = p = 1/2, 1/3, 3/5 (sum 43/30); rescaled by N / Σw = 3 · 30/43 = 90/43
    out = talr(logits, labels, tau=1.0, normalize=True)
    w = [45 / 43, 30 / 43, 54 / 43]
    nll = [math.log(2), math.log(3), math.log(5 / 3)]
    assert out.n_tokens == 3
    assert out.loss_sum.item() == pytest.approx(sum(a * b for a, b in zip(w, nll, strict=True)), rel=1e-5)
    assert out.stats["talr/w_mean"] == pytest.approx(1.0)
    assert out.stats["talr/w_raw_mean"] == pytest.approx(43 / 90, rel=1e-6)
    assert out.stats["talr/w_p50"] == pytest.approx(45 / 43, rel=1e-5)
    # unnormalised `talr` is unchanged: Σ p_i ℓ_i, mean weight 43/90 < 1
    plain = talr(logits, labels, tau=1.0)
    assert plain.loss_sum.item() == pytest.approx(0.5 * nll[0] + nll[1] / 3 + 0.6 * nll[2], rel=1e-5)
    assert "talr/w_raw_mean" not in plain.stats
    # weights all at the floor: normalised they are all 1, i.e. plain cross-entropy
    floored = talr(logits, labels, tau=1.0, floor=0.9, normalize=True)
    assert floored.loss_sum.item() == pytest.approx(sum(nll), rel=1e-5)
    assert floored.stats["talr/frac_floor"] == 1.0


def test_talr_normalized_gradient_uses_detached_rescaled_weights():
    logits, labels = _three_token_batch()
    got = _grad(talr, logits, labels, tau=1.0, normalize=True)
    x = logits.clone().requires_grad_()
    t = target_nll(x, labels)
    (torch.tensor([45 / 43, 30 / 43, 54 / 43]) * t.nll).sum().backward()
    assert torch.allclose(got, x.grad, atol=1e-6)


def _grad(fn, logits, labels, **kw) -> torch.Tensor:
    x = logits.clone().requires_grad_()
    fn(x, labels, **kw).loss_sum.backward()
    return x.grad


def test_talr_weights_are_detached():
    logits, labels = hand_logits()
    logits[0, 1] = torch.tensor([0.5, -1.0, 2.0])
    got = _grad(talr, logits, labels, tau=0.7)
    x = logits.clone().requires_grad_()
    t = target_nll(x, labels)
    w = torch.exp(-t.nll.detach() / 0.7)  # constants
    (w * t.nll).sum().backward()
    assert torch.allclose(got, x.grad, atol=1e-7)
    y = logits.clone().requires_grad_()  # with a gradient through w the result would differ
    t = target_nll(y, labels)
    (torch.exp(-t.nll / 0.7) * t.nll).sum().backward()
    assert not torch.allclose(got, y.grad, atol=1e-4)


def test_flow_loss_and_gradient_by_hand():
    logits, labels = hand_logits()  # row 0 holds both targets; row 1 none
    weights = torch.tensor([2.0, 5.0], requires_grad=True)
    out = flow(logits, labels, sequence_weights=weights)
    assert out.loss_sum.item() == pytest.approx(2 * math.log(6), rel=1e-6)
    assert out.stats["flow/w_mean"] == 2.0
    got = _grad(flow, logits, labels, sequence_weights=weights)
    plain = _grad(OBJECTIVES.get("cross_entropy"), logits, labels)
    assert torch.allclose(got, 2 * plain)
    flow(logits.clone().requires_grad_(), labels, sequence_weights=weights).loss_sum.backward()
    assert weights.grad is None  # no gradient into the weights


def test_flow_weights_by_hand():
    losses = torch.tensor([1.0, 2.0, 3.0])
    w, tau = flow_weights(losses, tau=1.0)
    e = [math.exp(-1), math.exp(-2), math.exp(-3)]
    assert tau == 1.0 and w.tolist() == pytest.approx([3 * v / sum(e) for v in e], rel=1e-6)
    assert w.mean().item() == pytest.approx(1.0)
    _, tau = flow_weights(losses)
    assert tau == 2.0  # the median base loss
    big, _ = flow_weights(torch.tensor([1000.0, 2000.0]), tau=0.001)  # no overflow
    assert big.tolist() == pytest.approx([2.0, 0.0])


def test_objective_params_are_checked():
    check_objective_params("talr", {"tau": 0.5, "floor": 0.01})
    check_objective_params("talr", {"normalize": True})
    with pytest.raises(SpilloverError, match="normalize"):
        check_objective_params("talr", {"normalize": "yes"})
    with pytest.raises(SpilloverError, match="allowed: tau, floor"):
        check_objective_params("talr", {"temperature": 1})
    with pytest.raises(SpilloverError, match="tau=0 is not allowed"):
        check_objective_params("flow", {"tau": 0})


def test_flow_in_the_loop_caches_weights_and_resumes_identically(
    make_model, tokenizer, toy_sequences, make_params, tmp_path, monkeypatch
):
    p = make_params(objective="flow", max_steps=4, checkpoint_every=2)
    straight = train(make_model(), tokenizer, toy_sequences, p, tmp_path / "straight")
    cached = json.loads((tmp_path / "straight" / WEIGHTS_FILE).read_text())
    assert len(cached["weights"]) == len(toy_sequences)
    assert sum(cached["weights"]) == pytest.approx(len(toy_sequences), rel=1e-5)
    ranked = sorted(cached["base_loss"])  # 24 sequences: τ = the mean of the 12th and 13th
    assert cached["tau"] == pytest.approx((ranked[11] + ranked[12]) / 2)

    def crash(record):
        if record["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(make_model(), tokenizer, toy_sequences, p, tmp_path / "resumed", progress=crash)

    def no_recompute(*args, **kwargs):
        raise AssertionError("the cached weights must be reused")

    monkeypatch.setattr(flow_module, "sequence_nll", no_recompute)
    resumed = train(make_model(), tokenizer, toy_sequences, p, tmp_path / "resumed")
    assert resumed.final_loss == straight.final_loss and resumed.fingerprint == straight.fingerprint
    ce = train(make_model(), tokenizer, toy_sequences, make_params(max_steps=4), tmp_path / "ce")
    assert ce.fingerprint != straight.fingerprint
