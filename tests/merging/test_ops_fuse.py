"""SLERP/LERP and CPI-FT fusion against hand-computed values."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from spillover.errors import SpilloverError
from spillover.merging.fuse import FusionStats, fuse_models, fuse_tensor
from spillover.merging.ops import angle, lerp, mean_tensor, slerp

T = torch.tensor
R = 1 / math.sqrt(2)


def test_slerp_orthogonal_by_hand():
    a, b = T([1.0, 0.0]), T([0.0, 1.0])
    out, spherical = slerp(a, b, 0.5)
    assert spherical and torch.allclose(out, T([R, R]))  # sin(π/4)/sin(π/2) each
    out, _ = slerp(a, b, 1 / 3)  # Ω = π/2: weights sin(π/3), sin(π/6)
    assert torch.allclose(out, T([math.sqrt(3) / 2, 0.5]))
    assert torch.equal(slerp(a, b, 0.0)[0], a) and torch.equal(slerp(a, b, 1.0)[0], b)
    # unequal norms: the weights apply to the original vectors
    assert torch.allclose(slerp(T([2.0, 0.0]), T([0.0, 4.0]), 0.5)[0], T([2 * R, 4 * R]))


def test_slerp_falls_back_to_lerp_for_colinear_and_opposite_vectors():
    out, spherical = slerp(T([1.0, 0.0]), T([3.0, 0.0]), 0.5)  # Ω = 0
    assert not spherical and out.tolist() == [2.0, 0.0]
    out, spherical = slerp(T([1.0, 1.0]), T([-1.0, -1.0]), 0.25)  # Ω = π
    assert not spherical and out.tolist() == [0.5, 0.5]
    out, spherical = slerp(T([0.0, 0.0]), T([1.0, 2.0]), 0.5)  # a zero vector has no angle
    assert not spherical and out.tolist() == [0.5, 1.0]
    # below the threshold ε the fallback is taken, above it the spherical formula
    a, b = T([1.0, 0.0]), T([math.cos(0.1), math.sin(0.1)])
    assert angle(a, b) == pytest.approx(0.1)
    assert not slerp(a, b, 0.5, epsilon=0.2)[1] and slerp(a, b, 0.5, epsilon=0.05)[1]
    assert torch.allclose(slerp(a, b, 0.5, epsilon=0.05)[0], T([math.cos(0.05), math.sin(0.05)]))


def test_lerp_and_bad_factors():
    assert lerp(T([0.0, 4.0]), T([4.0, 0.0]), 0.25).tolist() == [1.0, 3.0]
    with pytest.raises(SpilloverError, match="omega"):
        slerp(T([1.0]), T([2.0]), 1.5)
    with pytest.raises(SpilloverError, match="epsilon"):
        slerp(T([1.0]), T([2.0]), 0.5, epsilon=-0.1)


def test_fuse_tensor_by_hand_with_a_collision():
    init = T([0.0, 0.0, 0.0, 0.0])
    base = T([1.0, 1.0, 1.0, 1.0])
    t1, t2 = T([5.0, 2.0, 1.0, 1.0]), T([1.0, -3.0, 7.0, 1.0])
    c1, c2 = T([True, True, False, False]), T([False, True, True, False])
    # ω = 0: the non-core merge keeps base exactly. Position 1 collides: |2 − 0| < |−3 − 0| → task 2 wins.
    out = fuse_tensor(init, base, [t1, t2], [c1, c2], omega=0.0, epsilon=1e-4)
    assert out.tolist() == [5.0, -3.0, 7.0, 1.0]
    # ω = 1 with LERP everywhere (ε = π): non-core positions end at the mean of the tasks' values
    out = fuse_tensor(init, base, [t1, T([1.0, -3.0, 7.0, 2.0])], [c1, c2], omega=1.0, epsilon=math.pi)
    assert out.tolist() == [5.0, -3.0, 7.0, 1.5]
    # exact tie on magnitude: the tied values are averaged, whatever the task order
    tied = [T([0, 2.0, 0, 0]), T([0, -2.0, 0, 0]), T([0, 2.0, 0, 0])]
    masks = [c1, c2, T([False, True, False, False])]
    stats = FusionStats()
    out = fuse_tensor(init, base, tied, masks, 0.0, 1e-4, stats)
    assert out[1].item() == pytest.approx(2 / 3)  # (2 − 2 + 2) / 3
    assert stats.transplanted == [2, 2, 1] and stats.collisions == 1
    assert fuse_tensor(init, base, tied[::-1], masks[::-1], 0.0, 1e-4)[1] == out[1]


def test_fuse_models_lerp_half_and_stats():
    init = {"w": T([0.0, 0.0]), "b": T([0.0])}
    base = {"w": T([2.0, 2.0]), "b": T([1.0])}
    tuned = [{"w": T([4.0, 4.0]), "b": T([3.0])}]  # colinear with base: LERP at ω = 0.5
    cores = [{"w": T([True, False])}]  # "b" absent: no core there
    fused, stats = fuse_models(init, base, tuned, cores, omega=0.5, epsilon=1e-4)
    assert fused["w"].tolist() == [4.0, 3.0] and fused["b"].tolist() == [2.0]
    assert stats.n_lerp == 2 and stats.n_slerp == 0 and stats.transplanted == [1] and stats.collisions == 0


def test_mean_tensor_by_hand():
    assert mean_tensor([T([1.0, 2.0]), T([3.0, 6.0])]).tolist() == [2.0, 4.0]
    assert mean_tensor([T([1.0, 2.0]), T([3.0, 6.0])]).dtype == torch.float64
    with pytest.raises(SpilloverError, match="shapes differ"):
        mean_tensor([T([1.0]), T([1.0, 2.0])])


def test_non_core_merge_is_one_slerp_towards_the_equal_weight_mean_by_hand():
    base = T([1.0, 0.0])
    none = T([False, False])
    # mean of the probes (0, 1), (0, 2), (0, 3) = (0, 2); Ω(base, mean) = π/2: weights sin(π/4) each
    three = [T([0.0, 1.0]), T([0.0, 2.0]), T([0.0, 3.0])]
    stats = FusionStats()
    out = fuse_tensor(T([0.0, 0.0]), base, three, [none] * 3, 0.5, 1e-4, stats)
    assert torch.allclose(out, T([R, 2 * R])) and stats.n_slerp == 1 and stats.n_lerp == 0
    # ω = 1/3: weights sin(π/3) on base, sin(π/6) on the mean
    out = fuse_tensor(T([0.0, 0.0]), base, three, [none] * 3, 1 / 3, 1e-4)
    assert torch.allclose(out, T([math.sqrt(3) / 2, 0.5 * 2]))
    # every task weighs 1/3 whatever its place (a pairwise chain weighed them 0.125 / 0.25 / 0.625)
    for perm in itertools.permutations(three):
        assert torch.allclose(
            fuse_tensor(T([0.0, 0.0]), base, list(perm), [none] * 3, 0.5, 1e-4), T([R, 2 * R])
        )


def test_permuting_the_tasks_changes_the_fused_weights_by_less_than_1e_6():
    g = torch.Generator().manual_seed(0)
    shapes = {"w": (6, 5), "b": (7,)}
    init = {n: torch.randn(s, generator=g) for n, s in shapes.items()}
    base = {n: v + 0.1 * torch.randn(v.shape, generator=g) for n, v in init.items()}
    tuned = [{n: v + 0.2 * torch.randn(v.shape, generator=g) for n, v in init.items()} for _ in range(4)]
    tuned[3]["w"][0] = tuned[1]["w"][0]  # an exact tie in magnitude inside overlapping cores
    cores = [{n: torch.rand(s, generator=g) < 0.4 for n, s in shapes.items()} for _ in range(4)]
    cores[1]["w"][0] = cores[3]["w"][0] = True
    reference, ref_stats = fuse_models(init, base, tuned, cores, omega=0.3, epsilon=1e-4)
    assert ref_stats.collisions > 0 and ref_stats.n_slerp == 2
    for perm in itertools.permutations(range(4)):
        fused, stats = fuse_models(init, base, [tuned[i] for i in perm], [cores[i] for i in perm], 0.3, 1e-4)
        for name in shapes:
            assert (fused[name] - reference[name]).abs().max().item() < 1e-6
        assert stats.transplanted == [ref_stats.transplanted[i] for i in perm]
        assert stats.collisions == ref_stats.collisions
