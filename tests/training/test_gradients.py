"""The mean LoRA gradient used for gradient alignment (issue 26): checked against a gradient written out by
hand, independent of the batch size, and B-only at a fresh adapter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spillover.data.collate import Sequence_
from spillover.models.adapters import apply_lora
from spillover.training.gradients import cosine, mean_gradient


def _seqs():
    return [Sequence_([5, 6, 7, 8, 9], 3), Sequence_([10, 11, 12], 1), Sequence_([3, 4, 5, 6], 2)]


def test_mean_gradient_equals_the_hand_written_token_mean_loss(tiny_model, tokenizer):
    model = apply_lora(tiny_model, r=4, alpha=8, seed=1)
    seqs = _seqs()
    got = mean_gradient(model, seqs, tokenizer.pad_token_id, batch_size=2)
    # by hand: every sequence alone, summed NLL of its continuation tokens (position i predicts i + 1)
    params = [p for p in model.parameters() if p.requires_grad]
    total, n = 0.0, 0
    model.eval()
    for s in seqs:
        ids = torch.tensor([s.input_ids])
        logits = model(input_ids=ids).logits[0]
        targets = ids[0, max(s.n_prompt, 1) :]
        total = total + F.cross_entropy(logits[max(s.n_prompt, 1) - 1 : -1], targets, reduction="sum")
        n += len(targets)
    grads = torch.autograd.grad(total / n, params, allow_unused=True)
    want = torch.cat(
        [(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params, strict=True)]
    )
    assert n == 2 + 2 + 2
    assert torch.allclose(got, want, atol=1e-6, rtol=1e-4)
    assert torch.allclose(got, mean_gradient(model, seqs, tokenizer.pad_token_id, batch_size=1), atol=1e-6)
    assert all(p.grad is None for p in params)  # left as found


def test_fresh_adapter_gradient_lives_in_b_only(tiny_model, tokenizer):
    model = apply_lora(tiny_model, r=4, alpha=8, seed=1)
    got = mean_gradient(model, _seqs(), tokenizer.pad_token_id)
    offset = 0
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = got[offset : offset + p.numel()]
        offset += p.numel()
        if "lora_A" in name:
            assert not part.any(), name  # B = 0: no gradient reaches A
        else:
            assert part.any(), name
    assert offset == len(got)


def test_cosine():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])
    assert cosine(a, b) == pytest.approx(2**-0.5)
    assert cosine(a, torch.zeros(2)) == 0.0


def test_refuses_what_has_no_gradient(tiny_model, tokenizer):
    with pytest.raises(ValueError, match="no trainable parameters"):
        mean_gradient(tiny_model.requires_grad_(False), _seqs(), tokenizer.pad_token_id)
    model = apply_lora(tiny_model, r=2, alpha=4)
    with pytest.raises(ValueError, match="no target tokens"):
        mean_gradient(model, [Sequence_([1, 2], 2)], tokenizer.pad_token_id)
