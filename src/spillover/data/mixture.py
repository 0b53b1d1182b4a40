"""Task mixtures (methods.md §5): the `mixture:` YAML section, and the pure maths behind it.

Maths (plain values in, arrays out; tested against hand-computed values):
- `strategy_weights`: proportional (n_i / Σn), equal (1/K), temperature (n_i^{1/T}, normalised), ratios.
- `Schedule`: the ratio vector at each step — constant, piecewise by phase (fractions of the run), or a
  linear interpolation between two vectors.
- `allocate`: how many sequences of each task every optimiser step takes. `step` sampling draws one task
  per step from the step's ratios (inverse CDF of one seeded uniform per step, so step k's draw depends
  only on the seed and k); `batch` mixing splits every step's slots across tasks in proportion, carrying the
  rounding remainder to the next step (each task's running total stays within one sequence of its target).

LLaMA-Factory names are accepted as aliases: `interleave_probs` (a list in task order) = `ratios`;
`mix_strategy: concat` = proportional in-batch mixing; `interleave_under` / `interleave_over` = per-step
sampling that stops when the first / every task has been seen once (`stop: first_exhausted` /
`all_exhausted`), times `epochs`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from spillover.errors import SpilloverError

Strict = ConfigDict(extra="forbid", allow_inf_nan=False)
RatioVector = dict[str, float] | list[float]
STRATEGIES = ("proportional", "equal", "temperature", "ratios")
_MIX_STRATEGY = {  # LLaMA-Factory `mix_strategy` -> (sampling, stop)
    "concat": ("batch", "total"),
    "interleave_under": ("step", "first_exhausted"),
    "interleave_over": ("step", "all_exhausted"),
}


# ---- the YAML section ---------------------------------------------------------------------------------


class PhaseSpec(BaseModel):
    """Ratios that apply until `until` (a fraction of the run's steps, in (0, 1])."""

    model_config = Strict
    until: float = Field(gt=0, le=1)
    ratios: RatioVector


class LinearSpec(BaseModel):
    model_config = Strict
    start: RatioVector
    end: RatioVector


class ScheduleSpec(BaseModel):
    """Exactly one of `phases` (piecewise constant) or `linear` (start → end over the run)."""

    model_config = Strict
    phases: list[PhaseSpec] | None = Field(default=None, min_length=1)
    linear: LinearSpec | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ScheduleSpec:
        if (self.phases is None) == (self.linear is None):
            raise ValueError("a schedule needs exactly one of `phases` or `linear`")
        if self.phases is not None:
            ends = [p.until for p in self.phases]
            if any(b <= a for a, b in zip(ends, ends[1:], strict=False)) or ends[-1] != 1.0:
                raise ValueError(f"phase `until` values must increase and the last must be 1.0, got {ends}")
        return self


class MixtureSettings(BaseModel):
    """How several training tasks are mixed. Without this section tasks are simply concatenated."""

    model_config = Strict
    strategy: Literal["proportional", "equal", "temperature", "ratios"] | None = None
    temperature: float = Field(default=2.0, gt=0, description="strategy temperature: weight ∝ n^(1/T)")
    ratios: RatioVector | None = None
    schedule: ScheduleSpec | None = None
    sampling: Literal["step", "batch"] = "step"
    stop: Literal["total", "first_exhausted", "all_exhausted"] = "total"

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "interleave_probs" in data:
            if "ratios" in data:
                raise ValueError("give `ratios` or its alias `interleave_probs`, not both")
            data["ratios"] = data.pop("interleave_probs")
        if "mix_strategy" in data:
            name = data.pop("mix_strategy")
            if name not in _MIX_STRATEGY:
                raise ValueError(f"mix_strategy '{name}' is not one of {', '.join(_MIX_STRATEGY)}")
            if "sampling" in data or "stop" in data:
                raise ValueError("mix_strategy sets `sampling` and `stop`; do not give them too")
            data["sampling"], data["stop"] = _MIX_STRATEGY[name]
            if "strategy" not in data and "schedule" not in data:
                data["strategy"] = (
                    "ratios" if "ratios" in data else ("proportional" if name == "concat" else "equal")
                )
        return data

    @model_validator(mode="after")
    def _consistent(self) -> MixtureSettings:
        if self.schedule is not None and (self.strategy is not None or self.ratios is not None):
            raise ValueError("give either a `schedule` or a `strategy`/`ratios`, not both")
        if self.ratios is not None and self.strategy not in (None, "ratios"):
            raise ValueError(f"`ratios` needs strategy: ratios (got strategy: {self.strategy})")
        if self.strategy == "ratios" and self.ratios is None:
            raise ValueError("strategy: ratios needs `ratios` (a mapping task -> weight, or a list)")
        return self

    def to_schedule(self, tasks: Sequence[str], sizes: Sequence[int], where: str = "mixture") -> Schedule:
        """The pure schedule for these training tasks (in this order) and their sizes."""
        vec = lambda v, at: ratio_vector(v, tasks, f"{where}.{at}")  # noqa: E731
        if self.schedule is not None and self.schedule.phases is not None:
            phases = self.schedule.phases
            return Schedule(
                "phases",
                tuple(vec(p.ratios, f"schedule.phases[{i}].ratios") for i, p in enumerate(phases)),
                tuple(p.until for p in phases),
            )
        if self.schedule is not None:
            lin = self.schedule.linear
            return Schedule(
                "linear", (vec(lin.start, "schedule.linear.start"), vec(lin.end, "schedule.linear.end"))
            )
        if self.ratios is not None:
            return Schedule("constant", (vec(self.ratios, "ratios"),))
        weights = strategy_weights(self.strategy or "proportional", sizes, self.temperature)
        return Schedule("constant", (tuple(weights.tolist()),))


def ratio_vector(value: RatioVector, tasks: Sequence[str], where: str) -> tuple[float, ...]:
    """A ratio mapping (every task named once) or list (task order) as normalised weights."""
    if isinstance(value, dict):
        unknown = [k for k in value if k not in tasks]
        missing = [t for t in tasks if t not in value]
        if unknown or missing:
            raise SpilloverError(
                f"{where}: ratios must name exactly the training tasks {list(tasks)}; "
                f"unknown: {unknown}, missing: {missing}"
            )
        raw = [float(value[t]) for t in tasks]
    else:
        if len(value) != len(tasks):
            raise SpilloverError(f"{where}: {len(value)} ratios for {len(tasks)} tasks {list(tasks)}")
        raw = [float(v) for v in value]
    if any(v < 0 or not math.isfinite(v) for v in raw) or sum(raw) <= 0:
        raise SpilloverError(f"{where}: ratios must be ≥ 0 with a positive sum, got {raw}")
    total = sum(raw)
    return tuple(v / total for v in raw)


# ---- pure maths -----------------------------------------------------------------------------------------


def strategy_weights(strategy: str, sizes: Sequence[int], temperature: float = 1.0) -> np.ndarray:
    """(K,) weights summing to 1. temperature: w_i ∝ n_i^{1/T} (T=1 proportional, T→∞ equal)."""
    n = np.asarray(sizes, dtype=float)
    if strategy == "proportional":
        w = n
    elif strategy == "equal":
        w = np.ones_like(n)
    elif strategy == "temperature":
        w = n ** (1.0 / temperature)
    else:
        raise SpilloverError(f"strategy '{strategy}' has no weights without ratios; allowed: {STRATEGIES}")
    return w / w.sum()


@dataclass(frozen=True)
class Schedule:
    """Ratio vectors over a run. `phases`: vectors[i] applies while step/n_steps < ends[i];
    `linear`: vectors[0] at the first step to vectors[1] at the last; `constant`: vectors[0]."""

    kind: Literal["constant", "phases", "linear"]
    vectors: tuple[tuple[float, ...], ...]
    ends: tuple[float, ...] = ()

    def at(self, step: int, n_steps: int) -> np.ndarray:
        """(K,) ratios of 0-based step `step` of `n_steps`."""
        if self.kind == "constant":
            return np.asarray(self.vectors[0])
        if self.kind == "phases":
            frac = step / n_steps
            i = next((i for i, end in enumerate(self.ends) if frac < end), len(self.ends) - 1)
            return np.asarray(self.vectors[i])
        a = step / (n_steps - 1) if n_steps > 1 else 0.0
        return (1 - a) * np.asarray(self.vectors[0]) + a * np.asarray(self.vectors[1])

    def table(self, n_steps: int) -> np.ndarray:
        """(n_steps, K) ratios of every step."""
        return np.stack([self.at(s, n_steps) for s in range(n_steps)])

    def mean(self) -> np.ndarray:
        """(K,) run-average ratios (independent of the run length): used by the `stop` rules."""
        v = np.asarray(self.vectors)
        if self.kind == "constant":
            return v[0]
        if self.kind == "linear":
            return (v[0] + v[1]) / 2
        widths = np.diff((0.0, *self.ends))
        return widths @ v


def run_length(schedule: Schedule, sizes: Sequence[int], slots: int, epochs: int, stop: str) -> int:
    """Optimiser steps of a mixture run: `total` = epochs × Σn sequences; `first_exhausted` /
    `all_exhausted` = until the first / every task (with weight) has been drawn epochs × n_i times in
    expectation, i.e. epochs × min/max over tasks of n_i / mean ratio_i."""
    n = np.asarray(sizes, dtype=float)
    if stop == "total":
        seqs = n.sum()
    else:
        p = schedule.mean()
        need = n[p > 0] / p[p > 0]
        seqs = need.min() if stop == "first_exhausted" else need.max()
    return max(1, math.ceil(epochs * seqs / slots))


def allocate(ratios: np.ndarray, slots: int, sampling: str, seed: int) -> np.ndarray:
    """(n_steps, K) sequences per task per step, from (n_steps, K) ratios; every row sums to `slots`.

    `step`: one task per step, drawn by inverse CDF from a uniform u_k (the k-th draw of
    default_rng(seed), so step k's task depends only on seed and k). `batch`: deficit rounding — each task
    accrues ratio × slots per step and gets the whole part; leftover slots go to the largest remainders.
    """
    n_steps, k = ratios.shape
    out = np.zeros((n_steps, k), dtype=np.int64)
    if sampling == "step":
        u = np.random.default_rng(seed).random(n_steps)
        cdf = np.cumsum(ratios, axis=1)
        cdf[:, -1] = np.inf  # float round-off must not push u past the last task
        tasks = (u[:, None] >= cdf).sum(axis=1)
        out[np.arange(n_steps), tasks] = slots
        return out
    deficit = np.zeros(k)
    for s in range(n_steps):
        deficit += ratios[s] * slots
        take = np.maximum(np.floor(deficit + 1e-9), 0).astype(np.int64)
        left = slots - int(take.sum())
        rest = deficit - take
        if left > 0:  # leftover slots: largest remainders first, ties by task order
            take[np.lexsort((np.arange(k), -rest))[:left]] += 1
        elif left < 0:  # negative carries made the whole parts overshoot: trim the smallest remainders
            trim = [i for i in np.lexsort((np.arange(k), rest)) if take[i] > 0][:-left]
            take[trim] -= 1
        assert take.sum() == slots and (take >= 0).all(), (take, slots)
        out[s] = take
        deficit -= take
    return out
