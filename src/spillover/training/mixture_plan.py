"""Which sequences each optimiser step of a task mixture takes: a pure function of (seed, step).

`MixturePlan` has `BatchPlan`'s interface (n_steps, micro_batches, position, step_stats, describe), so the
loop trains on a mixture unchanged and resumes exactly. Its sequences are the concatenation of the tasks'
sequences (task i occupies a contiguous block). `data.mixture.allocate` decides how many sequences of
each task every step takes; the k-th sequence drawn from task i is element k mod n_i of that task's
permutation for epoch k div n_i (seeded by seed, i and that epoch), so a task is up-sampled beyond its
size epoch by epoch and its epochs are counted separately. A step's sequences are sorted by length
before being cut into `grad_accum` micro-batches (less padding; the step's gradient is the same).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from spillover.data.mixture import MixtureSettings, Schedule, allocate, run_length


class MixturePlan:
    """tasks/sizes: the tasks in the order their sequences are concatenated; lengths: every sequence's
    token count (len = Σ sizes)."""

    def __init__(
        self,
        tasks: Sequence[str],
        sizes: Sequence[int],
        lengths: Sequence[int],
        schedule: Schedule,
        batch_size: int,
        grad_accum: int,
        seed: int,
        n_steps: int,
        sampling: str = "step",
    ) -> None:
        assert sum(sizes) == len(lengths) and min(sizes) > 0, (sizes, len(lengths))
        self.tasks, self.sizes, self.lengths = list(tasks), np.asarray(sizes), list(lengths)
        self.schedule, self.batch_size, self.grad_accum = schedule, batch_size, grad_accum
        self.seed, self.n_steps, self.sampling = seed, n_steps, sampling
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.ratios = schedule.table(n_steps)  # (n_steps, K)
        self.counts = allocate(self.ratios, batch_size * grad_accum, sampling, seed)  # (n_steps, K)
        self.drawn_before = np.cumsum(self.counts, axis=0) - self.counts  # (n_steps, K)

    @classmethod
    def build(
        cls,
        tasks: Sequence[str],
        sizes: Sequence[int],
        lengths: Sequence[int],
        schedule: Schedule,
        *,
        sampling: str,
        stop: str,
        batch_size: int,
        grad_accum: int,
        seed: int,
        epochs: int,
        max_steps: int | None,
    ) -> MixturePlan:
        """The run length from `max_steps`, else from `epochs` and the `stop` rule (`run_length`)."""
        slots = batch_size * grad_accum
        n_steps = max_steps if max_steps is not None else run_length(schedule, sizes, slots, epochs, stop)
        return cls(tasks, sizes, lengths, schedule, batch_size, grad_accum, seed, n_steps, sampling)

    def _order(self, task: int, epoch: int) -> np.ndarray:
        return _permutation(self.seed, task, epoch, int(self.sizes[task]))

    def step_indices(self, step: int) -> list[int]:
        """Global sequence indices of the step, in task order then draw order."""
        out: list[int] = []
        for t in range(len(self.tasks)):
            for k in range(
                int(self.drawn_before[step, t]), int(self.drawn_before[step, t] + self.counts[step, t])
            ):
                epoch, pos = divmod(k, int(self.sizes[t]))
                out.append(int(self.offsets[t] + self._order(t, epoch)[pos]))
        return out

    def micro_batches(self, step: int) -> list[list[int]]:
        idx = sorted(self.step_indices(step), key=lambda i: (self.lengths[i], i))
        b = self.batch_size
        return [idx[i : i + b] for i in range(0, len(idx), b)]

    def position(self, step: int) -> tuple[int, int]:
        """(whole passes over all the data so far, micro-batches so far): informational, for progress."""
        seen = int(self.drawn_before[step].sum()) if step < self.n_steps else int(self.counts.sum())
        return seen // len(self.lengths), step * self.grad_accum

    def epochs_after(self, step: int) -> np.ndarray:
        """(K,) passes over each task after 0-based step `step` (fractional)."""
        return (self.drawn_before[step] + self.counts[step]) / self.sizes

    def step_stats(self, step: int) -> dict[str, float]:
        """Logged with the step: sequences per task (`mix/<task>`) and each task's epochs so far."""
        epochs = self.epochs_after(step)
        return {
            **{f"mix/{t}": int(c) for t, c in zip(self.tasks, self.counts[step], strict=True)},
            **{f"epochs/{t}": round(float(e), 4) for t, e in zip(self.tasks, epochs, strict=True)},
        }

    def describe(self) -> dict[str, Any]:
        """What changes the data order (enters the run fingerprint)."""
        return {
            "mixture": {
                "tasks": self.tasks,
                "sizes": self.sizes.tolist(),
                "kind": self.schedule.kind,
                "vectors": self.schedule.vectors,
                "ends": self.schedule.ends,
                "sampling": self.sampling,
            }
        }

    def summary(self) -> list[dict[str, Any]]:
        """Per task: configured mean ratio, realised fraction of sequences, sequences drawn, epochs."""
        total = self.counts.sum()
        drawn = self.counts.sum(axis=0)
        return [
            {
                "task": t,
                "size": int(n),
                "mean_ratio": float(r),
                "realised_fraction": float(d / total),
                "sequences": int(d),
                "epochs": float(d / n),
            }
            for t, n, r, d in zip(self.tasks, self.sizes, self.ratios.mean(axis=0), drawn, strict=True)
        ]


def plan_mixture(
    mixture: MixtureSettings,
    tasks: Sequence[str],
    sizes: Sequence[int],
    lengths: Sequence[int],
    *,
    batch_size: int,
    grad_accum: int,
    seed: int,
    epochs: int,
    max_steps: int | None,
) -> MixturePlan:
    """A `mixture:` section as the loop's step plan over the tasks' concatenated sequences (task order =
    `tasks`, `sizes[i]` sequences each; `lengths`: every sequence's token count)."""
    return MixturePlan.build(
        tasks,
        sizes,
        lengths,
        mixture.to_schedule(tasks, sizes),
        sampling=mixture.sampling,
        stop=mixture.stop,
        batch_size=batch_size,
        grad_accum=grad_accum,
        seed=seed,
        epochs=epochs,
        max_steps=max_steps,
    )


def plan_for_settings(settings, tasks: Sequence[str], sizes: Sequence[int], sequences) -> MixturePlan | None:
    """A `train:` section's `mixture:` as the loop's step plan over the tasks' concatenated sequences (task
    order = `tasks`, `sizes[i]` sequences each); None without a mixture. `settings`: a TrainSettings."""
    if settings.mixture is None:
        return None
    return plan_mixture(
        settings.mixture,
        tasks,
        sizes,
        [len(s.input_ids) for s in sequences],
        batch_size=settings.batch_size,
        grad_accum=settings.grad_accum,
        seed=settings.seed,
        epochs=settings.epochs,
        max_steps=settings.max_steps,
    )


@lru_cache(maxsize=64)
def _permutation(seed: int, task: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, task, epoch]).permutation(n)
