"""Which sequences go into which micro-batch of which optimiser step: a pure function of the step.

Every epoch re-buckets the data by length with seed `seed + epoch` (`collate.length_buckets`); an
optimiser step takes `grad_accum` consecutive micro-batches of its epoch (the last step of an epoch may take
fewer). The number of batches per epoch does not depend on the seed, so step → (epoch, batch index) is
fixed arithmetic and a resumed run replays exactly the same data order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

from spillover.data.collate import length_buckets


@dataclass(frozen=True)
class BatchPlan:
    """lengths: token count of every sequence; n_steps: epochs · steps_per_epoch unless max_steps is set."""

    lengths: Sequence[int]
    batch_size: int
    grad_accum: int
    seed: int
    epochs: int = 1
    max_steps: int | None = None
    _cache: dict[int, list[list[int]]] = field(default_factory=dict, repr=False, compare=False)

    @cached_property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.epoch_batches(0)) / self.grad_accum)

    @property
    def n_steps(self) -> int:
        return self.max_steps if self.max_steps is not None else self.epochs * self.steps_per_epoch

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All micro-batches (lists of sequence indices) of one epoch, in training order."""
        if epoch not in self._cache:
            self._cache.clear()  # keep one epoch in memory
            self._cache[epoch] = length_buckets(self.lengths, self.batch_size, self.seed + epoch)
        return self._cache[epoch]

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, index of the first micro-batch in that epoch's order) for optimiser step `step` (0-based)."""
        epoch, within = divmod(step, self.steps_per_epoch)
        return epoch, within * self.grad_accum

    def micro_batches(self, step: int) -> list[list[int]]:
        epoch, start = self.position(step)
        return self.epoch_batches(epoch)[start : start + self.grad_accum]

    def step_stats(self, step: int) -> dict[str, float]:
        """Nothing extra to log per step (a `MixturePlan` logs its per-task counts here)."""
        return {}

    def describe(self) -> dict:
        """Nothing beyond TrainParams decides the order, so nothing extra enters the run fingerprint."""
        return {}
