"""Shared-prefix packing: the same logits, loss and gradients as the padded batch, with the prefix run once."""

from __future__ import annotations

import pytest
import torch

from spillover.data.collate import IGNORE, Sequence_, pad_batch
from spillover.models.load import Precision
from spillover.models.packing import PAD, common_prefix, tree_attention_mask
from spillover.training import shared_prefix as sp
from spillover.training.loop import _forward_fn, _n_keep
from spillover.training.objectives import cross_entropy
from spillover.training.types import TrainParams

CPU = torch.device("cpu")
SYSTEM = "<|im_start|>system\nYou are a careful film critic.<|im_end|>\n<|im_start|>user\nIs it good?\n\n"


def prefixed(tokenizer, toy_sequences, system: str = SYSTEM) -> list[Sequence_]:
    head = tokenizer(system, add_special_tokens=False)["input_ids"]
    return [Sequence_(head + s.input_ids, len(head) + s.n_prompt) for s in toy_sequences]


def test_common_prefix_stops_at_the_limit_or_where_rows_differ():
    ids = [[5, 6, 7, 8, 9], [5, 6, 7, 1, 0], [5, 6, 7, 8, 2]]
    assert common_prefix(ids, 2) == 2  # e.g. row 1's target starts at 3: its last prompt token stays its own
    assert common_prefix(ids, 4) == 3  # then they differ
    assert common_prefix(ids, 0) == 0


def test_rows_balance_and_respect_the_minimum():
    lengths = [70, 72, 75, 80, 71, 73, 74, 79]
    rows = sp.plan_rows(prefix=40, lengths=lengths, padded_width=80)
    assert (
        rows is not None and len(rows) >= sp.MIN_ROWS and sorted(b for r in rows for b in r) == list(range(8))
    )
    widths = [sum(lengths[b] - 40 for b in r) for r in rows]
    assert max(widths) - min(widths) <= max(lengths) - 40  # balanced within one sequence
    assert sp.plan_rows(0, [70] * 8, 70) is None  # nothing shared
    assert sp.plan_rows(2, [70] * 8, 70) is None  # too little shared to pay
    assert sp.plan_rows(40, [70], 70) is None  # one sequence
    assert sp.plan_rows(40, [70, 70], 70) is None  # two rows of two sequences: nothing to share


def test_packed_rows_hold_the_prefix_once_per_row(tokenizer, toy_sequences):
    seqs = prefixed(tokenizer, toy_sequences[:8])
    batch = pad_batch(seqs, 0)
    labels = batch["labels"]
    first = int((labels != IGNORE).int().argmax(dim=1).min())
    packed = sp.pack_shared_prefix(batch["input_ids"], batch["attention_mask"], labels.shape[1] - first + 1)
    head = len(tokenizer(SYSTEM, add_special_tokens=False)["input_ids"])
    assert packed is not None and head <= packed.prefix <= first - 1  # 'Review: a ' is shared too
    n_rows = packed.input_ids.shape[0]
    assert (packed.groups == 0).sum() == n_rows * packed.prefix
    assert int((packed.groups != PAD).sum()) == n_rows * packed.prefix + sum(
        len(s.input_ids) - packed.prefix for s in seqs
    )
    for b, s in enumerate(seqs):  # every sequence's rest, in order, at its own positions
        r = int((packed.groups == b + 1).any(dim=1).int().argmax())
        mine = packed.groups[r] == b + 1
        assert packed.input_ids[r, mine].tolist() == s.input_ids[packed.prefix :]
        assert packed.position_ids[r, mine].tolist() == list(range(packed.prefix, len(s.input_ids)))
        assert packed.input_ids[r, : packed.prefix].tolist() == s.input_ids[: packed.prefix]


def forward_backward(model, batch, share: bool):
    """(logits, labels, objective output, gradients, packed batches seen) of one training micro-batch."""
    seen, real = [], sp.pack_shared_prefix

    def spy(*args):
        seen.append(real(*args))
        return seen[-1]

    params = TrainParams(precision=Precision(CPU, torch.float32))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("spillover.training.loop.pack_shared_prefix", spy)
        logits, labels = _forward_fn(model, params, share_prefix=share)(batch)
    out = cross_entropy(logits, labels)
    out.loss_sum.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits, labels, out, grads, seen


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_same_logits_loss_and_gradients_as_the_padded_batch(tokenizer, toy_sequences, make_model, impl):
    batch = pad_batch(prefixed(tokenizer, toy_sequences[:8]), 0)
    models = [make_model(), make_model()]
    for m in models:
        m.set_attn_implementation(impl)  # the public switch (spillover chooses it at load time)
    lp, yp, op, gp, seen_p = forward_backward(models[0], batch, share=False)
    ls, ys, os_, gs, seen_s = forward_backward(models[1], batch, share=True)
    assert not seen_p and seen_s[0] is not None  # the padded run did not pack, the other did
    assert torch.equal(yp, ys) and lp.shape == ls.shape
    real = (yp != IGNORE).roll(-1, dims=1)  # positions whose logits predict a target
    torch.testing.assert_close(ls[real], lp[real], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(os_.loss_sum, op.loss_sum, rtol=1e-5, atol=1e-5)
    assert gp.keys() == gs.keys()
    for name in gp:
        torch.testing.assert_close(gs[name], gp[name], rtol=1e-4, atol=1e-5, msg=name)


def test_packing_needs_a_prefix_that_pays(tokenizer, toy_sequences):
    def packs(seqs) -> bool:
        batch = pad_batch(seqs, 0)
        return (
            sp.pack_shared_prefix(batch["input_ids"], batch["attention_mask"], _n_keep(batch["labels"]))
            is not None
        )

    assert packs(toy_sequences[:8])  # 'Review: a ' is 10 of the byte tokenizer's ~45 tokens per row
    s = toy_sequences[0]  # equal lengths: packing would drop no padding either
    one_shared = [Sequence_(s.input_ids[:1] + [200 + i] + s.input_ids[1:], s.n_prompt + 1) for i in range(8)]
    assert not packs(one_shared)  # 'R' alone does not pay


def test_tree_mask_by_hand():
    groups = torch.tensor([[0, 0, 1, 1, 1, 2, PAD]])
    branches = torch.tensor([[0, 0, 0, 1, 2, 0, 0]])
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0, 0],  # example 1's context sees the prefix
            [1, 1, 1, 1, 0, 0, 0],  # its option 1 sees prefix, context, itself
            [1, 1, 1, 0, 1, 0, 0],  # its option 2: not option 1
            [1, 1, 0, 0, 0, 1, 0],  # example 2: the prefix, not example 1
            [1, 1, 0, 0, 0, 0, 1],  # padding: the prefix and its own diagonal (never an all-masked row)
        ],
        dtype=torch.bool,
    )
    assert torch.equal(tree_attention_mask(groups, branches)[0, 0], expected)
    assert torch.equal(
        tree_attention_mask(groups)[0, 0, 4, :5], torch.tensor([1, 1, 1, 1, 1], dtype=torch.bool)
    )
