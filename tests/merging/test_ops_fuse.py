"""SLERP/LERP and CPI-FT fusion against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from spillover.errors import SpilloverError
from spillover.merging.fuse import fuse_models, fuse_tensor
from spillover.merging.ops import angle, lerp, slerp

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
    # ω = 1 with LERP everywhere (ε = π): non-core positions end at the last task's values
    out = fuse_tensor(init, base, [t1, t2], [c1, c2], omega=1.0, epsilon=math.pi)
    assert out.tolist() == [5.0, -3.0, 7.0, 1.0]
    # tie on magnitude: the earlier task wins
    out = fuse_tensor(init, base, [T([0, 2.0, 0, 0]), T([0, -2.0, 0, 0])], [c1, c2], 0.0, 1e-4)
    assert out[1] == 2.0


def test_fuse_models_lerp_half_and_stats():
    init = {"w": T([0.0, 0.0]), "b": T([0.0])}
    base = {"w": T([2.0, 2.0]), "b": T([1.0])}
    tuned = [{"w": T([4.0, 4.0]), "b": T([3.0])}]  # colinear with base: LERP at ω = 0.5
    cores = [{"w": T([True, False])}]  # "b" absent: no core there
    fused, stats = fuse_models(init, base, tuned, cores, omega=0.5, epsilon=1e-4)
    assert fused["w"].tolist() == [4.0, 3.0] and fused["b"].tolist() == [2.0]
    assert stats.n_lerp == 2 and stats.n_slerp == 0 and stats.transplanted == [1] and stats.collisions == 0
