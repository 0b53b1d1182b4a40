"""Multi-stage schedules for CPI-FT (methods.md §3.2, §3.4): group tasks by core-region overlap, order the
groups into stages, and draw each stage's small balanced sample. Pure functions of plain values.

- `jaccard_matrix`: S[i, j] = |C_i ∩ C_j| / |C_i ∪ C_j| (diagonal 1).
- `group_tasks`: tasks i ≠ j are linked when S[i, j] ≥ τ; groups are the connected components of that
  graph (τ = 0 links every pair: one group; τ = 1 links only identical cores). Groups are listed by their
  smallest task index, members ascending.
- `order_groups`: `random` = a permutation drawn from the seed; `heuristic` = smallest overlap first: a
  group's overlap is the largest S[i, j] between one of its tasks and a task outside it (0 with one group);
  ascending, ties by the group's first task. Rationale: the least entangled groups train first, so the
  cores frozen early collide least with what later stages need.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from torch import Tensor

from spillover.errors import SpilloverError
from spillover.training.masks import jaccard

ORDERS = ("heuristic", "random")


def jaccard_matrix(masks: Sequence[Mapping[str, Tensor]]) -> np.ndarray:
    """(K, K) symmetric Jaccard similarities of K masks."""
    k = len(masks)
    out = np.eye(k)
    for i in range(k):
        for j in range(i + 1, k):
            out[i, j] = out[j, i] = jaccard(masks[i], masks[j])
    return out


def group_tasks(similarity: np.ndarray, tau: float) -> list[list[int]]:
    """Connected components of the graph with an edge i–j (i ≠ j) when similarity[i, j] ≥ τ."""
    if not 0.0 <= tau <= 1.0:
        raise SpilloverError(f"grouping threshold tau={tau!r} is not allowed; use a number in [0, 1]")
    k = similarity.shape[0]
    parent = list(range(k))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(k):
        for j in range(i + 1, k):
            if similarity[i, j] >= tau:
                parent[max(root(i), root(j))] = min(root(i), root(j))
    groups: dict[int, list[int]] = {}
    for i in range(k):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def group_overlap(similarity: np.ndarray, group: Sequence[int]) -> float:
    """The largest similarity between a task of `group` and a task outside it (0 when none is outside)."""
    outside = [j for j in range(similarity.shape[0]) if j not in group]
    return float(max((similarity[i, j] for i in group for j in outside), default=0.0))


def order_groups(
    groups: Sequence[Sequence[int]], similarity: np.ndarray, order: str, seed: int
) -> list[list[int]]:
    """The groups as stages G_1..G_K (see the module doc for `random` and `heuristic`)."""
    if order == "random":
        return [list(groups[i]) for i in np.random.default_rng(seed).permutation(len(groups))]
    if order == "heuristic":
        return [list(g) for g in sorted(groups, key=lambda g: (group_overlap(similarity, g), g[0]))]
    raise SpilloverError(f"stage order '{order}' is not allowed; use one of: {', '.join(ORDERS)}")


def balanced_sample(sizes: Sequence[int], n: int, seed: int) -> list[list[int]]:
    """Per task, min(n, size) distinct example indices drawn without replacement (seeded by seed and the
    task's position), ascending: the stage's small balanced calibration sample."""
    return [
        sorted(np.random.default_rng([seed, i]).choice(size, min(n, size), replace=False).tolist())
        for i, size in enumerate(sizes)
    ]
