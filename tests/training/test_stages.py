"""Jaccard grouping and stage ordering against hand-computed values (τ = 0 and τ = 1 edge cases)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spillover.errors import SpilloverError
from spillover.training.stages import balanced_sample, group_tasks, jaccard_matrix, order_groups

S = np.array(
    [
        [1.0, 0.30, 0.05, 0.00],
        [0.30, 1.0, 0.10, 0.02],
        [0.05, 0.10, 1.0, 0.00],
        [0.00, 0.02, 0.00, 1.0],
    ]
)


def test_jaccard_matrix_by_hand():
    a = {"x": torch.tensor([True, True, False, False])}
    b = {"x": torch.tensor([False, True, True, False])}
    c = {"x": torch.tensor([False, False, False, True])}
    m = jaccard_matrix([a, b, c])
    assert m.tolist() == [[1.0, 1 / 3, 0.0], [1 / 3, 1.0, 0.0], [0.0, 0.0, 1.0]]


def test_grouping_by_threshold():
    assert group_tasks(S, 0.2) == [[0, 1], [2], [3]]
    assert group_tasks(S, 0.1) == [[0, 1, 2], [3]]  # ≥ τ links: 1–2 at exactly 0.1, then 0–1
    assert group_tasks(S, 0.05) == [[0, 1, 2], [3]]
    assert group_tasks(S, 0.0) == [[0, 1, 2, 3]]  # τ = 0: every pair is linked
    assert group_tasks(S, 1.0) == [[0], [1], [2], [3]]  # τ = 1: only identical cores link
    same = np.ones((3, 3))
    assert group_tasks(same, 1.0) == [[0, 1, 2]]
    with pytest.raises(SpilloverError, match="tau"):
        group_tasks(S, 1.5)


def test_stage_order_heuristic_and_random():
    groups = group_tasks(S, 0.2)  # [[0, 1], [2], [3]]
    # overlaps: {0,1} → max(0.05, 0.00, 0.10, 0.02) = 0.10; {2} → 0.10; {3} → 0.02
    assert order_groups(groups, S, "heuristic", 0) == [[3], [0, 1], [2]]
    shuffled = order_groups(groups, S, "random", 7)
    assert sorted(map(tuple, shuffled)) == sorted(map(tuple, groups))
    assert shuffled == order_groups(groups, S, "random", 7)  # seeded
    assert order_groups([[0, 1, 2, 3]], S, "heuristic", 0) == [[0, 1, 2, 3]]
    with pytest.raises(SpilloverError, match="stage order"):
        order_groups(groups, S, "alphabetical", 0)


def test_balanced_sample():
    picks = balanced_sample([10, 3, 50], 4, seed=1)
    assert [len(p) for p in picks] == [4, 3, 4]
    assert picks[1] == [0, 1, 2] and all(p == sorted(set(p)) for p in picks)
    assert picks == balanced_sample([10, 3, 50], 4, seed=1)
