"""Data-parallel training: one training run over N processes (`torchrun` / `accelerate launch`).

The global step does not depend on N. `batch_size × grad_accum` sequences make one optimiser step, and the
plan (`BatchPlan`, `MixturePlan`) cuts them into the same `grad_accum` micro-batches as in one process;
rank r trains micro-batches r, r + N, r + 2N, ... of every step (`World.share`). Every rank pads the whole
step, so each one knows the step's target-token count N_tok without communication, and divides each of
its micro-batches' loss sums by it. Then the gradients are **summed** over the ranks (not averaged). That
sum is the one-process gradient Σ_micro ∂loss_sum/∂θ / N_tok, with the float additions in another order.
Per-micro-batch objectives stay exact: a micro-batch is never split, so TALR's batch-median τ sees the
same sequences, and FLOW's per-sequence weights are sliced the same way.

Rank 0 writes everything (log, checkpoints, FLOW weights, final artifacts); the others only read the
output folder. It must therefore be shared by all processes (one machine, or a shared file system).
Dropout: in a data-parallel run every micro-batch draws from its own generator state, seeded by (seed,
step, micro-batch). The masks therefore do not depend on N or on resuming, but they are not the
one-process run's masks (that run draws from one stream).

Why hand-written reductions instead of `DistributedDataParallel`: a rank may have no micro-batch in a
step (the last step of an epoch can be short), the regularisers must count once per step and not once per
rank, and the sum (not mean) is the point. DDP needs a forward pass on every rank before each sync, adds
its hooks to every backward and averages. Here, one bucketed all-reduce per optimiser step does the same
job in a few lines. It is not overlapped with the backward pass, which costs little with accumulation (one
sync per step).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from spillover.errors import SpilloverError
from spillover.models.load import Precision

T = TypeVar("T")
# rank 0 alone evaluates the base model or computes FLOW weights while the others wait at a barrier;
# launchers (torchrun, accelerate) stop every process when one fails, so a long limit cannot hang a job
TIMEOUT = timedelta(hours=4)
BUCKET_BYTES = 64 * 2**20


@dataclass(frozen=True)
class World:
    """This process's place in the job: rank in [0, size). The default is one process."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def share(self, n_micro: int) -> list[int]:
        """This rank's micro-batches of a step with `n_micro` micro-batches (round-robin over ranks)."""
        return list(range(self.rank, n_micro, self.size))

    def check_grad_accum(self, grad_accum: int) -> None:
        """A step has at most `grad_accum` micro-batches; more processes than that would sit idle."""
        if grad_accum < self.size:
            raise SpilloverError(
                f"train.grad_accum={grad_accum} with {self.size} processes: every optimiser step has at most "
                f"{grad_accum} micro-batches, so {self.size - grad_accum} processes would have nothing to do. "
                f"The global step is batch_size × grad_accum sequences whatever the number of processes; "
                f"set grad_accum to a multiple of {self.size} and batch_size to what fits on one device"
            )

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def main_first(self, fn: Callable[[], T], others: Callable[[], T] | None = None) -> T:
        """Rank 0 runs `fn` (which may write files) first, then the other ranks run `others` (default:
        `fn`, which then finds what rank 0 wrote)."""
        if not self.active:
            return fn()
        result = fn() if self.is_main else None
        dist.barrier()
        return result if self.is_main else (others or fn)()

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value` (picklable), in rank order, on every rank."""
        if not self.active:
            return [value]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, value)
        return out

    def check_agree(self, fingerprint: str, resume_step: int) -> None:
        """All ranks must train the same run (settings, data, model) from the same checkpoint."""
        seen = self.gather((fingerprint, resume_step))
        if len(set(seen)) > 1:
            raise SpilloverError(
                "the training processes disagree on (run fingerprint, checkpoint step): "
                + ", ".join(f"rank {r}: {s}" for r, s in enumerate(seen))
                + "; every process must see the same data and the same output_dir (a shared file system)"
            )

    def sum_step(self, loss: float, stats: dict[str, float]) -> tuple[float, dict[str, float]]:
        """The step's loss and stats from every rank's share. Each rank's values are sums over its
        micro-batches divided by the global token count (`loop._accumulate`), so the total is their sum;
        a key missing on a rank (no micro-batch with target tokens) counts 0 there, as in one process."""
        if not self.active:
            return loss, stats
        parts = self.gather((loss, stats))
        merged: dict[str, float] = {}
        for _, part in parts:
            for k, v in part.items():
                merged[k] = merged.get(k, 0.0) + v
        return sum(p[0] for p in parts), merged

    def sum_gradients(self, params: Sequence[Tensor]) -> None:
        """Replace every gradient by its sum over the ranks, in place. A parameter without a gradient on
        some rank joins with zeros; one without a gradient on every rank keeps None (AdamW skips it, as in
        one process)."""
        if not self.active or not params:
            return
        device = params[0].device
        has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=device)
        dist.all_reduce(has)
        live = [p for p, h in zip(params, has.tolist(), strict=True) if h]
        for p in live:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        for bucket in _buckets([p.grad for p in live]):
            flat = torch.cat([g.reshape(-1) for g in bucket])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            for g, part in zip(bucket, flat.split([g.numel() for g in bucket]), strict=True):
                g.copy_(part.view_as(g))

    def broadcast_from_main(self, params: Sequence[Tensor]) -> None:
        """Copy rank 0's values of `params` to every rank (the start state, as DDP does)."""
        if self.active:
            with torch.no_grad():
                for p in params:
                    dist.broadcast(p.data, src=0)


def _buckets(grads: list[Tensor]) -> list[list[Tensor]]:
    """Consecutive groups of one device and dtype, each up to BUCKET_BYTES (one all-reduce per group)."""
    out: list[list[Tensor]] = []
    size = 0
    for g in grads:
        last = out[-1] if out else None
        fits = last is not None and (last[0].dtype, last[0].device) == (g.dtype, g.device)
        if fits and size + g.numel() * g.element_size() <= BUCKET_BYTES:
            last.append(g)
            size += g.numel() * g.element_size()
        else:
            out.append([g])
            size = g.numel() * g.element_size()
    return out


def micro_batch_seed(seed: int, step: int, micro: int) -> int:
    """The dropout seed of micro-batch `micro` of optimiser step `step` in a data-parallel run."""
    return int(np.random.SeedSequence([seed, step, micro]).generate_state(1, np.uint64)[0])


def current() -> World:
    """The initialised process group's rank and size, else one process."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def launched() -> bool:
    """Started by torchrun / `accelerate launch` with more than one process (they set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(precision: Precision) -> Precision:
    """Join the launcher's process group (gloo on CPU, NCCL on CUDA) when launched with several
    processes; on CUDA each process takes GPU `LOCAL_RANK`. Returns `precision` on this process's device.
    Without a launcher: `precision` unchanged."""
    if not launched():
        return precision
    if precision.device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        precision = replace(precision, device=torch.device("cuda", local))
    if not dist.is_initialized():
        backend = "nccl" if precision.device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT)
    return precision


def leave() -> None:
    """Leave the process group `join` opened (at the end of `spillover train`)."""
    if launched() and dist.is_initialized():
        dist.destroy_process_group()


def threads_per_process() -> int:
    """CPU threads for this process: the machine's cores shared by the processes on this machine."""
    return max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def refuse_launch(command: str) -> None:
    """For commands that cannot run as several processes (a study runs its jobs one by one)."""
    if launched():
        raise SpilloverError(
            f"`{command}` cannot be launched as several processes (WORLD_SIZE="
            f"{os.environ['WORLD_SIZE']}); launch one training job with `spillover train` under torchrun "
            "or accelerate instead (docs/scaling.md)"
        )
