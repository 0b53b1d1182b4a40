"""Parameter masks against hand-computed values, and exact freezing under AdamW with weight decay: a frozen
element must not move at all, bit for bit, over many steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spillover.errors import SpilloverError
from spillover.training.masks import (
    FreezeHook,
    jaccard,
    mask_from_indices,
    mask_intersection,
    mask_size,
    mask_to_indices,
    mask_union,
    n_selected,
    top_p_mask,
    update_magnitudes,
)

T = torch.tensor


def test_update_magnitudes_by_hand():
    mags = update_magnitudes({"w": T([1.0, -2.0, 3.0])}, {"w": T([0.5, 0.0, 3.5])})
    assert mags["w"].tolist() == [0.5, 2.0, 0.5]


def test_top_p_global_and_per_tensor_by_hand():
    scores = {"a": T([0.9, 0.1, 0.5, 0.2]), "b": T([[0.8, 0.3], [0.05, 0.7]])}
    # 8 elements, p = 25% → 2 kept globally: 0.9 (a[0]) and 0.8 (b[0,0])
    g = top_p_mask(scores, 25.0)
    assert g["a"].tolist() == [True, False, False, False]
    assert g["b"].tolist() == [[True, False], [False, False]]
    # p = 50% → 4 globally: 0.9, 0.8, 0.7, 0.5
    g = top_p_mask(scores, 50.0)
    assert g["a"].tolist() == [True, False, True, False] and g["b"].tolist() == [[True, False], [False, True]]
    # per tensor, 50% of each: a keeps 0.9, 0.5; b keeps 0.8, 0.7
    t = top_p_mask(scores, 50.0, scope="per_tensor")
    assert t["a"].tolist() == [True, False, True, False] and t["b"].tolist() == [[True, False], [False, True]]
    # per tensor 25%: ceil(1) of a, ceil(1) of b → differs from global 25% only by count rules
    t = top_p_mask(scores, 10.0, scope="per_tensor")  # ceil(0.4) = 1 per tensor
    assert mask_size(t) == 2 and t["b"][0, 0]
    assert mask_size(top_p_mask(scores, 100.0)) == 8


def test_n_selected_and_bad_p():
    assert n_selected(1000, 1.0) == 10 and n_selected(3, 1.0) == 1 and n_selected(7, 50.0) == 4
    for bad in (0.0, -1.0, 100.5):
        with pytest.raises(SpilloverError, match="core fraction p"):
            n_selected(10, bad)
    with pytest.raises(SpilloverError, match="scope"):
        top_p_mask({"a": T([1.0])}, 50.0, scope="layer")


def test_union_intersection_jaccard_by_hand():
    a = {"x": T([True, True, False, False]), "y": T([True])}
    b = {"x": T([False, True, True, False]), "y": T([False])}
    assert mask_union([a, b])["x"].tolist() == [True, True, True, False]
    assert mask_intersection(a, b)["x"].tolist() == [False, True, False, False]
    # |A| = 3, |B| = 2, |A∩B| = 1, |A∪B| = 4
    assert jaccard(a, b) == pytest.approx(1 / 4)
    assert jaccard(a, a) == 1.0 and jaccard({"x": T([True])}, {"x": T([False])}) == 0.0
    assert jaccard({"x": T([False])}, {"x": T([False])}) == 1.0  # two empty cores are identical
    assert jaccard(a, {"z": T([True])}) == 0.0  # a name absent from a mask selects nothing


def test_mask_indices_round_trip():
    m = {"x": T([[False, True], [True, False]]), "y": T([False, False])}
    idx = mask_to_indices(m)
    assert idx["x"].tolist() == [1, 2] and "y" not in idx
    back = mask_from_indices(idx, {"x": torch.Size([2, 2]), "y": torch.Size([2])})
    assert all(torch.equal(back[k], m[k]) for k in m)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))


def _step(model, opt, x, y, hooks=()):
    loss = ((model(x) - y) ** 2).mean()
    loss.backward()
    for h in hooks:
        h.before_optimizer_step(model, opt, 0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    for h in hooks:
        h.after_optimizer_step(model, opt, 0)


def test_frozen_elements_do_not_move_bit_for_bit_under_adamw_with_weight_decay():
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1, betas=(0.9, 0.99))
    x, y = torch.randn(16, 6), torch.randn(16, 3)
    for _ in range(10):  # unfrozen steps first: every element gets nonzero momentum
        _step(model, opt, x, y)
    frozen = {"0.weight": torch.rand(5, 6) < 0.5, "2.bias": T([True, False, True])}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert all(opt.state[p]["exp_avg"].abs().min() > 0 for p in model.parameters() if p.ndim > 1)
    hook = FreezeHook(frozen)
    for _ in range(50):
        _step(model, opt, x, y, [hook])
    after = dict(model.named_parameters())
    for name, m in frozen.items():
        assert torch.equal(after[name][m], before[name][m]), name  # bit-for-bit
        assert not torch.equal(after[name][~m], before[name][~m]), name  # the rest trained
    assert not torch.equal(after["2.weight"], before["2.weight"])


def test_without_the_hook_zeroing_gradients_alone_is_not_enough():
    """The control: momentum and weight decay move an element whose gradient is zero."""
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1)
    x, y = torch.randn(16, 6), torch.randn(16, 3)
    for _ in range(10):
        _step(model, opt, x, y)
    w = model[0].weight
    before = w.detach().clone()
    loss = ((model(x) - y) ** 2).mean()
    loss.backward()
    w.grad.zero_()
    opt.step()
    assert not torch.equal(w.detach(), before)


def test_freeze_hook_in_the_training_loop(tiny_model, tokenizer, tmp_path):
    from spillover.data.collate import Sequence_
    from spillover.training.loop import train
    from spillover.training.types import TrainParams

    seqs = [Sequence_(input_ids=list(range(5, 25)), n_prompt=4) for _ in range(8)]
    names = dict(tiny_model.named_parameters())
    frozen = {n: torch.rand(p.shape) < 0.3 for n, p in names.items() if p.ndim == 2}
    before = {n: p.detach().clone() for n, p in names.items()}
    params = TrainParams(lr=0.01, max_steps=6, batch_size=4, weight_decay=0.1, warmup_ratio=0.0)
    train(tiny_model, tokenizer, seqs, params, tmp_path / "run", hooks=[FreezeHook(frozen)])
    for n, m in frozen.items():
        assert torch.equal(names[n][m], before[n][m]), n
    assert any(not torch.equal(names[n], before[n]) for n in frozen)


def test_freeze_hook_rejects_unknown_names():
    model = _model()
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(SpilloverError, match="does not train"):
        FreezeHook({"nope.weight": T([True])}).before_optimizer_step(model, opt, 0)


def test_flat_magnitudes_and_top_p_indices_match_the_masks_with_ties():
    """`flat_update_magnitudes` + `top_p_indices` select exactly what `top_p_mask` of `update_magnitudes`
    selects — the same selection on the same values, so also among many ties at the cut."""
    from spillover.training.masks import IndexMask, flat_update_magnitudes, top_p_indices

    g = torch.Generator().manual_seed(0)
    init = {
        "a": torch.randn(40, 30, generator=g),
        "b": torch.randn(7, generator=g),
        "c": torch.randn(500, generator=g),
    }
    tuned = {
        n: v + (torch.randint(-3, 4, v.shape, generator=g) * 0.25) for n, v in init.items()
    }  # few values
    mags = update_magnitudes(tuned, init)
    flat, shapes = flat_update_magnitudes(tuned, init)
    assert list(shapes) == list(tuned) and torch.equal(flat, torch.cat([m.flatten() for m in mags.values()]))
    for scope in ("global", "per_tensor"):
        for p in (1.0, 10.0, 50.0, 100.0):
            want = top_p_mask(mags, p, scope)
            got = top_p_indices(flat, shapes, p, scope)
            assert isinstance(got, IndexMask) and mask_size(got) == mask_size(want)
            assert all(torch.equal(got[n], want[n]) for n in want), (scope, p)
            assert {n: i.tolist() for n, i in got.indices.items()} == {
                n: i.tolist() for n, i in mask_to_indices(want).items()
            }
    k = n_selected(
        flat.numel(), 10.0
    )  # the definition: the k largest of the concatenation (`_by_definition`)
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    chosen[_by_definition(flat, k)] = True
    assert torch.equal(torch.cat([v.flatten() for v in top_p_mask(mags, 10.0).values()]), chosen)


def _by_definition(flat: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest entries, ties ordered by the golden-ratio hash of the position (larger first), by a
    full sort: the reference for the streamed select."""
    positions = np.arange(flat.numel(), dtype=np.uint64)
    hashes = (positions * np.uint64(0x9E3779B1)) & np.uint64(0xFFFFFFFF)
    order = np.lexsort((-hashes.astype(np.float64), -flat.double().numpy()))  # value first, then hash
    return torch.from_numpy(np.sort(order[:k]).astype(np.int64))


@pytest.mark.parametrize("chunk", [7, 1000, 1 << 22])
def test_top_k_is_the_k_largest_with_ties_by_position_hash(monkeypatch, chunk):
    """The streamed radix select against a full sort (the definition), over signed values with many ties,
    ±0 (equal), infinities and values equal in their high 16 bits, in chunks smaller and larger than the
    input."""
    from spillover.training import masks

    monkeypatch.setattr(masks, "CHUNK", chunk)
    g = torch.Generator().manual_seed(2)
    ties = torch.randint(-4, 5, (900,), generator=g).float() * 0.5
    close = 1.0 + torch.arange(50) * 2.0**-23  # adjacent floats: one high-16-bit bucket
    special = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), 3e38, -3e38, 1e-45])
    flat = torch.cat([ties, close, special, torch.randn(300, generator=g)])[torch.randperm(1257, generator=g)]
    flat = torch.cat([torch.tensor([-0.0]), flat])  # -0.0 ties with the zeros
    at_zero = [int((flat > 0).sum()) + j for j in (1, 2, 3)]  # the cut among the zeros
    for k in (1, 2, 49, 50, 300, 628, 1257, 1258, *at_zero):
        assert torch.equal(masks._top_k(flat, k), _by_definition(flat, k)), (chunk, k)
    with pytest.raises(SpilloverError, match="k=0"):
        masks._top_k(flat, 0)


def test_top_k_spreads_ties_over_the_positions():
    """Half of 100,000 equal values: the kept ones are spread evenly (each tenth of the positions keeps
    about a tenth), not the lowest positions."""
    from spillover.training.masks import _top_k

    chosen = _top_k(torch.ones(100_000), 50_000)
    per_tenth = torch.bincount(chosen // 10_000, minlength=10)
    assert chosen.numel() == 50_000 and (per_tenth - 5_000).abs().max() < 100, per_tenth.tolist()


def test_index_masks_union_size_and_jaccard_match_the_boolean_ones():
    from spillover.training.masks import IndexMask

    g = torch.Generator().manual_seed(1)
    shapes = {"x": torch.Size([6, 5]), "y": torch.Size([9]), "z": torch.Size([4])}
    bools = [{n: torch.rand(s, generator=g) < 0.3 for n, s in shapes.items()} for _ in range(3)]
    bools[2]["z"][:] = False  # a name without elements
    idx = [IndexMask.from_mask(m) for m in bools]
    assert "z" not in idx[2].indices and not idx[2]["z"].any() and list(idx[2]) == list(shapes)
    assert all(torch.equal(i[n], m[n]) for i, m in zip(idx, bools, strict=True) for n in shapes)
    union = mask_union(idx)
    assert isinstance(union, IndexMask)
    assert all(torch.equal(union[n], mask_union(bools)[n]) for n in shapes)
    assert mask_size(union) == mask_size(mask_union(bools)) and mask_union(iter([])) == {}
    for a in range(3):
        for b in range(3):
            assert jaccard(idx[a], idx[b]) == jaccard(bools[a], bools[b])
    back = mask_from_indices(mask_to_indices(idx[0]), shapes)
    assert all(torch.equal(back[n], bools[0][n]) for n in shapes)


def test_freeze_hook_from_an_index_mask_freezes_the_same_elements():
    from spillover.training.masks import IndexMask

    x, y = torch.randn(16, 6), torch.randn(16, 3)
    frozen = {"0.weight": torch.rand(5, 6) < 0.5, "2.bias": T([True, False, True])}
    finals = []
    for mask in (frozen, IndexMask.from_mask(frozen)):
        model = _model()
        opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1)
        hook = FreezeHook(mask)
        for _ in range(5):
            _step(model, opt, x, y, [hook])
        finals.append({n: p.detach().clone() for n, p in model.named_parameters()})
    assert all(torch.equal(finals[0][n], finals[1][n]) for n in finals[0])
    assert torch.equal(finals[0]["0.weight"][frozen["0.weight"]], _model()[0].weight[frozen["0.weight"]])
