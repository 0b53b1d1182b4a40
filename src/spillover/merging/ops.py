"""Interpolation between two parameter tensors, linear (LERP) and spherical (SLERP), and the equal-weight
mean of several (`mean_tensor`). Pure tensor maths.

SLERP treats each tensor as one flattened vector (mergekit's `merge_methods/slerp.py` convention: the angle
is measured between the normalised vectors, the weights are applied to the original ones):

    Ω = arccos(⟨a, b⟩ / (‖a‖ ‖b‖))
    slerp(a, b; ω) = sin((1 − ω) Ω) / sin Ω · a + sin(ω Ω) / sin Ω · b

It falls back to LERP (1 − ω)·a + ω·b when the angle is below `epsilon` (radians; nearly colinear
vectors, where the formula divides by sin Ω ≈ 0), above π − `epsilon` (nearly opposite vectors, where the
great circle is not unique) or when either vector is zero. The angle is computed in float64 so tiny
angles (fine-tuned weights vs their start: often 1e-4 to 1e-2 rad) are measured accurately.
ω = 0 gives a, ω = 1 gives b.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from spillover.errors import SpilloverError


def lerp(a: Tensor, b: Tensor, omega: float) -> Tensor:
    """(1 − ω)·a + ω·b in fp32, returned in a's dtype; any shape (a and b alike)."""
    return torch.lerp(a.float(), b.float(), omega).to(a.dtype)


def angle(a: Tensor, b: Tensor) -> float:
    """The angle in radians between a and b as flattened vectors; nan when either is zero."""
    a64, b64 = a.detach().flatten().double(), b.detach().flatten().double()
    norms = a64.norm() * b64.norm()
    if float(norms) == 0.0:
        return math.nan
    return math.acos(max(-1.0, min(1.0, float(a64 @ b64 / norms))))


def slerp(a: Tensor, b: Tensor, omega: float, epsilon: float = 1e-4) -> tuple[Tensor, bool]:
    """(merged tensor in a's dtype and shape, whether the spherical formula was used rather than LERP)."""
    check_interpolation(omega, epsilon)
    if a.shape != b.shape:
        raise SpilloverError(f"slerp: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    theta = angle(a, b)
    if math.isnan(theta) or theta < epsilon or theta > math.pi - epsilon or math.sin(theta) < 1e-12:
        return lerp(a, b, omega), False
    s = math.sin(theta)
    wa, wb = math.sin((1.0 - omega) * theta) / s, math.sin(omega * theta) / s
    return (wa * a.double() + wb * b.double()).to(a.dtype), True


def mean_tensor(tensors: Sequence[Tensor]) -> Tensor:
    """(1/n) Σ_i tᵢ in float64, any shape (all alike). Every tensor weighs 1/n; the float64 sum of a few
    fp32 / bf16 values is exact unless their magnitudes differ by ~2^29, so the order does not matter."""
    if not tensors:
        raise SpilloverError("mean of no tensors: give at least one")
    total = torch.zeros(tensors[0].shape, dtype=torch.float64, device=tensors[0].device)
    for t in tensors:
        if t.shape != total.shape:
            raise SpilloverError(f"mean: shapes differ, {tuple(total.shape)} vs {tuple(t.shape)}")
        total += t.detach().double()
    return total / len(tensors)


def check_interpolation(omega: float, epsilon: float) -> None:
    if not 0.0 <= omega <= 1.0:
        raise SpilloverError(f"interpolation factor omega={omega!r} is not allowed; use a number in [0, 1]")
    if not epsilon >= 0.0:
        raise SpilloverError(f"SLERP angle threshold epsilon={epsilon!r} is not allowed; use a number ≥ 0")
