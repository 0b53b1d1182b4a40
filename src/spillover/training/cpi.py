"""Core Parameter Isolation fine-tuning, CPI-FT (methods.md §3), as plain functions over parameter dicts.

The method, in the order a caller runs it (the multitask study is one such caller; nothing here needs it):

1. probes: one single-task fine-tune θ⁽ⁱ⁾ per task from θ0 (`train_from` with `start=None`);
2. `core_regions`: each task's core C_i, the top-p% of its update magnitudes |θ⁽ⁱ⁾ − θ0|
   (`training.masks`); `jaccard_matrix` (`training.stages`) compares them;
3. `stage_plan`: tasks grouped by core overlap ≥ τ, the groups ordered into stages (`training.stages`);
4. `fuse_probes`: core transplant + SLERP of the probes into one start model (`merging.fuse`);
5. `cpi_stages` then `train_stages`: stage k trains on a balanced sample of its tasks while every core of
   stages 1..k−1 is frozen exactly (`training.masks.FreezeHook`), each stage starting from the previous
   stage's saved weights.

A state (`State`) is a model's parameters as a dict name → tensor (`model_state`), names as
`named_parameters()` gives them. CPI-FT needs full fine-tuning: its cores, transplant, SLERP and freezing
act on the weights W, and a LoRA adapter's update is the product B·A — selecting, transplanting or SLERPing
A and B separately puts one task's B next to another's A (cross-terms), which is not the method.
`core_regions` and `fuse_probes` therefore refuse states holding LoRA factors (`check_full_state`); the
multitask study refuses `train.method: lora` at validation. (`lora_state` reads an adapter's factors for
other uses.)
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch import Tensor, nn

from spillover.errors import SpilloverError
from spillover.merging.fuse import FusionStats, fuse_models
from spillover.training.checkpoint import CHECKPOINTS
from spillover.training.loop import train
from spillover.training.masks import ParamMask, mask_union, top_p_mask
from spillover.training.params import load_trainable_
from spillover.training.stages import ORDERS, balanced_sample, group_tasks, order_groups
from spillover.training.types import StepHook, TrainParams, TrainResult

State = dict[str, Tensor]
FUSION_BASES = ("last_probe", "base")


def model_state(model: nn.Module) -> State:
    """Every parameter of `model` (full fine-tuning), not copied: read it before the model changes."""
    return {n: p.detach() for n, p in model.named_parameters()}


def lora_state(model: nn.Module) -> State:
    """Copies of the LoRA weights (lora_A / lora_B) of a peft model: they outlive the adapter's unloading.
    Not a CPI-FT state: `core_regions` and `fuse_probes` refuse it (module doc)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if ".lora_" in n}


def check_full_state(names: Iterable[str]) -> None:
    """Refuse LoRA factors (names with `.lora_A` / `.lora_B`): CPI-FT works on full weights (module doc)."""
    lora = next((n for n in names if ".lora_A" in n or ".lora_B" in n), None)
    if lora is not None:
        raise SpilloverError(
            f"CPI-FT needs full fine-tuning, got the LoRA factor '{lora}': cores, transplant and SLERP of A "
            "and B separately are not the method (B·A gains cross-terms); fine-tune with method: full"
        )


def core_regions(
    magnitudes: Mapping[str, Mapping[str, Tensor]], p: float, scope: str = "global"
) -> dict[str, ParamMask]:
    """Per task, its core region: the top-p% of its update magnitudes (`training.masks.top_p_mask`).
    `magnitudes[task]`: |θ⁽ᵗᵃˢᵏ⁾ − θ0| per parameter (`training.masks.update_magnitudes`); full weights
    only (`check_full_state`)."""
    for m in magnitudes.values():
        check_full_state(m)
    return {task: top_p_mask(m, p, scope) for task, m in magnitudes.items()}


@dataclass(frozen=True)
class StagePlan:
    """Task groups at τ and, per stage order (`training.stages.ORDERS`), the groups as stages; task names."""

    groups: list[list[str]]
    orders: dict[str, list[list[str]]]


def stage_plan(
    jaccard: Sequence[Sequence[float]] | np.ndarray, tasks: Sequence[str], tau: float, seed: int
) -> StagePlan:
    """Group `tasks` by their cores' Jaccard matrix at threshold τ and order the groups both ways
    (`training.stages.group_tasks`, `order_groups`; `random` is drawn from `seed`)."""
    sim = np.asarray(jaccard)
    groups = group_tasks(sim, tau)

    def names(gs: Sequence[Sequence[int]]) -> list[list[str]]:
        return [[tasks[i] for i in g] for g in gs]

    return StagePlan(names(groups), {o: names(order_groups(groups, sim, o, seed)) for o in ORDERS})


def fuse_probes(
    init: Mapping[str, Tensor],
    probes: Sequence[Mapping[str, Tensor]],
    cores: Sequence[Mapping[str, Tensor]],
    fusion_base: Literal["last_probe", "base"],
    omega: float,
    epsilon: float,
) -> tuple[State, FusionStats]:
    """The fused start of staged training (`merging.fuse.fuse_models`): probes and their cores in stage
    order; fusion starts from the last probe (`last_probe`) or from θ0 (`base`). Full weights only
    (`check_full_state`). The merge weighs every task alike (`merging.fuse`), so only the choice of the
    last probe as the start depends on the order."""
    assert fusion_base in FUSION_BASES, fusion_base
    check_full_state(init)
    base = probes[-1] if fusion_base == "last_probe" else init
    return fuse_models(init, base, probes, cores, omega, epsilon)


@dataclass
class Stage:
    """One stage of CPI-FT: its tasks, the frozen elements (every core of the earlier stages) and, per
    task, the indices of its training examples in the stage's balanced sample."""

    tasks: list[str]
    frozen: ParamMask
    picks: list[list[int]]


def cpi_stages(
    stages: Sequence[Sequence[str]],
    cores: Mapping[str, Mapping[str, Tensor]],
    sizes: Mapping[str, int],
    calibration: int,
    seed: int,
) -> list[Stage]:
    """CPI-FT's staged plan: stage k freezes the union of the cores of stages 1..k−1 and samples
    min(`calibration`, n) examples of each of its tasks (`training.stages.balanced_sample`, seed + k).
    `sizes[task]`: how many training examples the task has."""
    out = []
    for k, stage in enumerate(stages):
        frozen = mask_union(cores[t] for s in stages[:k] for t in s)
        picks = balanced_sample([sizes[t] for t in stage], calibration, seed + k)
        out.append(Stage(list(stage), frozen, picks))
    return out


def train_stages(
    n_stages: int,
    train_stage: Callable[[int, State | None], TrainResult],
    read_state: Callable[[Path], State],
    start: State | None = None,
) -> list[TrainResult]:
    """Run stages 0..n−1 in turn: `train_stage(k, start)` trains stage k from `start` and returns its
    result; the next stage starts from the weights stage k saved (`read_state(result.artifact)`), so a
    resumed run sees the same values as an uninterrupted one."""
    results = []
    for k in range(n_stages):
        result = train_stage(k, start)
        results.append(result)
        start = read_state(result.artifact) if k + 1 < n_stages else None
    return results


def train_from(
    model: nn.Module,
    tokenizer,
    sequences,
    params: TrainParams,
    out_dir: Path,
    start: Mapping[str, Tensor] | None = None,
    hooks: Sequence[StepHook] = (),
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train `model` (its trainable parameters set up: full or a fresh adapter) starting from `start`
    (None: as it is, θ0), resumably in `out_dir`, with step `hooks` (e.g. `FreezeHook`). Once the run is
    saved its optimiser checkpoints are deleted: the saved weights are what later stages read."""
    load_trainable_(model, dict(start) if start is not None else None)
    result = train(model, tokenizer, sequences, params, out_dir, progress, hooks)
    drop_checkpoints(out_dir)
    return result


def drop_checkpoints(out_dir: Path) -> None:
    """Delete a finished run's optimiser checkpoints (its saved model or adapter stays)."""
    shutil.rmtree(Path(out_dir) / CHECKPOINTS, ignore_errors=True)
