"""The one explicit training loop: token-normalised gradient accumulation, resumable, deterministic.

One optimiser step = `grad_accum` micro-batches of length-bucketed sequences (see `batches.BatchPlan`). Each
micro-batch's objective returns a loss *sum* over its target tokens, divided by the number of target
tokens of the whole step before backward: accumulating 4 × 2 sequences gives the gradient of one batch of
8. Regularisers are added once per step. `hooks` run around the optimiser step: the seam for exact
parameter masks (methods.md §3.4). Objectives that declare `sequence_weights` (FLOW) get their
micro-batch's slice of per-sequence weights fixed before training (`training.flow`). Same seed and thread count → bit-identical losses on CPU, also across a
crash and resume. Under an initialised process group (`spillover train` under torchrun / accelerate) the
ranks share each step's micro-batches and sum their gradients; the global step is unchanged and rank 0
alone writes files (`training.distributed`).

Files in `out_dir`: `train_log.jsonl`, `checkpoints/` (latest only), then `adapter/` (LoRA, PEFT format) or
`model/` (full fine-tuning) and `train_result.json`, written last: when it exists, `train` returns it.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import Tensor, nn

from spillover.atomic import atomic_write_text
from spillover.data.collate import IGNORE, Sequence_, pad_batch, pad_id
from spillover.errors import SpilloverError
from spillover.models.compile import Compiled, wants_compile
from spillover.models.packing import model_mask, tree_attention_mask
from spillover.training import checkpoint as ckpt
from spillover.training.artifacts import LOG_FILE, RESULT_FILE, read_result, save_final
from spillover.training.batches import BatchPlan
from spillover.training.distributed import current, micro_batch_seed
from spillover.training.flow import prepare_sequence_weights
from spillover.training.objectives import OBJECTIVES, Objective, count_targets
from spillover.training.optim import build_optimizer, build_scheduler
from spillover.training.params import snapshot_trainable
from spillover.training.regularizers import REGULARIZERS
from spillover.training.shared_prefix import pack_shared_prefix
from spillover.training.types import StepHook, StepPlan, StepRecord, TrainParams, TrainResult

log = logging.getLogger(__name__)


def train(
    model: nn.Module,
    tokenizer,
    sequences: Sequence[Sequence_],
    params: TrainParams,
    out_dir: Path,
    progress: Callable[[dict[str, Any]], None] | None = None,
    hooks: Sequence[StepHook] = (),
    plan: StepPlan | None = None,
) -> TrainResult:
    """Fine-tune the trainable parameters of `model` in place; resume when `out_dir` holds a checkpoint.

    When `out_dir` holds a finished run of the same settings and data, nothing is trained: its trained
    weights are copied into `model` and its stored result is returned.

    `progress` is called after every optimiser step with the step's record as a plain dict (the same keys
    as a train_log.jsonl line: step, total_steps, loss, lr, tokens_per_s, ...; see `StepRecord`).

    `plan` decides each step's micro-batches (default: `BatchPlan`, length-bucketed epochs over all
    sequences; a task mixture passes a `MixturePlan`). It must be a pure function of the step.
    """
    out_dir = Path(out_dir)
    world = current()
    world.check_grad_accum(params.grad_accum)
    _check_data(sequences)
    if plan is None:
        plan = default_plan(sequences, params)
    objective = OBJECTIVES.get(params.objective)
    settings = params.settings() | plan.describe()
    fingerprint = ckpt.fingerprint(settings, sequences, model)
    seq_weights = world.main_first(
        lambda: prepare_sequence_weights(
            objective,
            params.objective_params,
            model,
            sequences,
            pad_id(tokenizer),
            params.precision,
            out_dir,
            fingerprint,
        )
    )
    if seq_weights is not None:  # FLOW: the weights are part of what the run computes
        fingerprint = ckpt.fingerprint(settings, sequences, model, seq_weights)
    if (out_dir / RESULT_FILE).exists():
        return _finished(out_dir, fingerprint, model)
    regs = {name: (REGULARIZERS.get(name), p) for name, p in params.regularizers.items()}
    if not world.is_main:
        regs = {}  # once per global step: rank 0 back-propagates them, the gradient sum carries them
    _seed_everything(params.seed)
    init = snapshot_trainable(model) if regs else {}  # θ0 taken before any resume: the run's true start
    optimizer = build_optimizer(model, params.lr, params.weight_decay, params.betas, params.eps)
    scheduler = build_scheduler(optimizer, plan.n_steps, params.warmup_ratio, params.schedule)
    state = _resume_or_start(out_dir, fingerprint, model, optimizer, scheduler)
    world.check_agree(fingerprint, state.step)
    weights = [p for group in optimizer.param_groups for p in group["params"]]
    world.broadcast_from_main(weights)
    forward = _forward_fn(model, params, _compiled(model, params))
    pad = pad_id(tokenizer)
    n_tokens, loss, started = state.n_tokens, state.last_loss, time.perf_counter() - state.seconds
    model.train()
    with (
        _checkpointing(model, params.gradient_checkpointing),
        _open_log(out_dir / LOG_FILE, state.step) if world.is_main else open(os.devnull, "w") as log_file,
    ):
        for step in range(state.step, plan.n_steps):
            t0 = time.perf_counter()
            micro = plan.micro_batches(step)
            batches = [pad_batch([sequences[i] for i in idx], pad) for idx in micro]
            extras = [{} if seq_weights is None else {"sequence_weights": seq_weights[idx]} for idx in micro]
            n_step_tokens = sum(count_targets(b["labels"]) for b in batches)  # of the global step
            mine = world.share(len(micro))
            seeds = [micro_batch_seed(params.seed, step, k) for k in mine] if world.active else None
            loss, stats = _accumulate(
                forward,
                [batches[k] for k in mine],
                objective,
                params.objective_params,
                n_step_tokens,
                [extras[k] for k in mine],
                seeds,
            )
            loss, stats = world.sum_step(loss, stats)
            stats |= _regularize(model, regs, init) | plan.step_stats(step)
            world.sum_gradients(weights)
            lr = scheduler.get_last_lr()[0]
            grad_norm = _optimizer_step(model, optimizer, scheduler, hooks, step, params.max_grad_norm)
            done, n_tokens, now = step + 1, n_tokens + n_step_tokens, time.perf_counter()
            n_input = sum(int(b["attention_mask"].sum()) for b in batches)
            record = StepRecord(
                step=done,
                total_steps=plan.n_steps,
                epoch=plan.position(step)[0],
                loss=loss,
                lr=lr,
                n_tokens=n_step_tokens,
                n_input_tokens=n_input,
                tokens_per_s=n_input / (now - t0),
                grad_norm=grad_norm,
                elapsed_s=now - started,
                stats=stats,
            )
            if done % params.log_every == 0 or done == plan.n_steps:
                log_file.write(json.dumps(record.to_json()) + "\n")
                log_file.flush()
            if world.is_main and (
                done == plan.n_steps or (params.checkpoint_every and done % params.checkpoint_every == 0)
            ):
                at = ckpt.Progress(done, *plan.position(done), n_tokens, now - started, loss, fingerprint)
                ckpt.save_checkpoint(out_dir, model, optimizer, scheduler, at)
            if progress is not None and world.is_main:
                progress(record.to_json())
    model.eval()
    seconds = time.perf_counter() - started
    return world.main_first(
        lambda: save_final(model, tokenizer, out_dir, loss, plan.n_steps, n_tokens, seconds, fingerprint),
        lambda: read_result(out_dir, fingerprint),
    )


@contextlib.contextmanager
def _checkpointing(model: nn.Module, on: bool):
    """transformers' activation checkpointing (non-reentrant `torch.utils.checkpoint` around each decoder
    layer) for the block, switched off again after it: a study's base model is shared with later jobs."""
    if not on:
        yield
        return
    enable = getattr(model, "activation_checkpointing_enable", None)  # transformers ≥ 5.23
    disable = getattr(model, "activation_checkpointing_disable", None)
    if enable is None:  # the older name of the same public method
        enable, disable = model.gradient_checkpointing_enable, model.gradient_checkpointing_disable
    enable({"use_reentrant": False})
    try:
        yield
    finally:
        disable()
        model.disable_input_require_grads()  # the embedding hook enable() adds for frozen-base training


def default_plan(sequences: Sequence[Sequence_], params: TrainParams) -> BatchPlan:
    """The step plan `train` uses when given none: length-bucketed epochs over all sequences."""
    lengths = [len(s.input_ids) for s in sequences]
    return BatchPlan(
        lengths, params.batch_size, params.grad_accum, params.seed, params.epochs, params.max_steps
    )


def _optimizer_step(
    model, optimizer, scheduler, hooks: Sequence[StepHook], step: int, max_norm: float | None
) -> float:
    """Hooks, clip, AdamW step, schedule step, zero grads, hooks. Returns the gradient norm before clipping."""
    for hook in hooks:
        hook.before_optimizer_step(model, optimizer, step)
    weights = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(weights, max_norm or float("inf"), foreach=True)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    for hook in hooks:
        hook.after_optimizer_step(model, optimizer, step)
    return grad_norm.item()


Forward = Callable[[dict[str, Tensor]], tuple[Tensor, Tensor]]


def _accumulate(
    forward: Forward,
    batches: list[dict[str, Tensor]],
    objective: Objective,
    obj_params,
    n_step_tokens: int,
    extras: Sequence[dict[str, Tensor]] = (),
    seeds: Sequence[int] | None = None,
) -> tuple[float, dict[str, float]]:
    """Forward + backward every micro-batch of one step. Returns the step's token-mean loss and stats.
    `extras[i]`: further objective inputs for micro-batch i (FLOW's `sequence_weights`); `seeds[i]`: its
    dropout seed (data-parallel runs; else the RNG stream runs on)."""
    n = max(n_step_tokens, 1)
    loss_sum, stats = 0.0, {}
    for i, (batch, extra) in enumerate(zip(batches, extras or [{}] * len(batches), strict=True)):
        if seeds is not None:
            torch.manual_seed(seeds[i])
        out = objective(*forward(batch), **obj_params, **extra)
        (out.loss_sum / n).backward()
        loss_sum += out.loss_sum.item()
        for k, v in out.stats.items():  # objective stats are token-means: weight by tokens
            stats[k] = stats.get(k, 0.0) + v * out.n_tokens / n
    return loss_sum / n, stats


def _forward_fn(
    model: nn.Module, params: TrainParams, compiled: Compiled | None = None, share_prefix: bool = True
) -> Forward:
    """batch (B, T) → (logits: (B, K, V), labels: (B, K)), K ≤ T the last positions covering every target.

    Skipping the lm_head on prompt positions (transformers' `logits_to_keep`) is exact, since it acts per
    position, and saves most of its cost and memory when targets are short. With `share_prefix`, a batch
    whose sequences start with the same tokens (a chat template's system prompt and the instruction) runs
    packed, the shared tokens once (`training.shared_prefix`; same logits up to rounding; the model's
    attention must take 4-D masks: `sdpa` or `eager`, as `models.load` loads it). With `compiled`, the
    forward pass runs through `torch.compile` (`models.compile`); a batch of one row (the remainder of an
    epoch in batches of several) then runs as two equal rows and keeps the first one's logits (same loss
    and gradients), as packing keeps ≥ 2 rows: dynamo specialises size 1 and would compile graphs of their
    own for that one step. With `batch_size: 1` every batch has one row and the size-1 graphs pay off.
    """
    device, prec = params.precision.device, params.precision
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    trim = "logits_to_keep" in inspect.signature(base.forward).parameters
    share_prefix = share_prefix and trim
    call = compiled or model

    def autocast():
        if prec.autocast:
            return torch.autocast(device.type, dtype=prec.compute_dtype)
        return contextlib.nullcontext()

    def run_model(inputs: dict[str, Tensor]) -> Tensor:
        with autocast():
            groups = inputs.pop("groups", None)
            if groups is not None:  # packed rows: their additive 4-D mask
                inputs["attention_mask"] = model_mask(model, tree_attention_mask(groups))
            return call(**inputs, use_cache=False).logits

    def forward(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        labels = batch["labels"].to(device)
        n_keep = _n_keep(labels) if trim else labels.shape[1]
        labels = labels[:, labels.shape[1] - n_keep :]
        packed = (
            pack_shared_prefix(batch["input_ids"], batch["attention_mask"], n_keep) if share_prefix else None
        )
        if packed is not None:
            inputs = {
                "input_ids": packed.input_ids,
                "position_ids": packed.position_ids,
                "groups": packed.groups,
                "logits_to_keep": packed.keep,
            }
            flat = run_model({k: v.to(device) for k, v in inputs.items()})  # (N, V) kept positions
            return flat.reshape(-1, flat.shape[-1])[packed.gather.to(device)], labels
        inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask")}
        rows, width = inputs["input_ids"].shape
        # (B, T) like packed rows' (transformers' default is (1, T)): one compiled graph serves both
        inputs["position_ids"] = torch.arange(width, device=device).expand(rows, width)
        if trim:
            inputs["logits_to_keep"] = n_keep
        if compiled is not None and rows == 1 < params.batch_size:
            inputs = {k: v.repeat(2, 1) if isinstance(v, Tensor) else v for k, v in inputs.items()}
        return run_model(inputs)[:rows], labels

    return forward


def _compiled(model: nn.Module, params: TrainParams) -> Compiled | None:
    """The model's forward through `torch.compile` when `params.compile` is True (`models.compile`)."""
    if not wants_compile(params.compile):
        return None
    log.info("compiling the model's forward pass for training")
    return Compiled(model)


def _n_keep(labels: Tensor) -> int:
    """How many final positions to keep: from just before the earliest target token. labels: (B, T)."""
    is_target = labels != IGNORE
    first = int(is_target.int().argmax(dim=1).min()) if bool(is_target.any()) else 0
    return labels.shape[1] - max(first - 1, 0)


def _regularize(model: nn.Module, regs: dict, init: dict[str, Tensor]) -> dict[str, float]:
    if not regs:
        return {}
    values = {name: fn(model, init, **p) for name, (fn, p) in regs.items()}
    sum(values.values()).backward()
    return {f"reg/{name}": v.item() for name, v in values.items()}


def _finished(out_dir: Path, fingerprint: str, model: nn.Module) -> TrainResult:
    result = read_result(out_dir, fingerprint)
    found = ckpt.latest_checkpoint(out_dir)
    if found is not None and ckpt.read_progress(found).step == result.n_steps:
        ckpt.load_trainable(found, model)
    else:
        log.warning("%s: finished run without its final checkpoint; `model` is left untrained", out_dir)
    log.info("%s already holds this finished run; not training again", out_dir)
    return result


def _resume_or_start(out_dir: Path, fingerprint: str, model, optimizer, scheduler) -> ckpt.Progress:
    found = ckpt.latest_checkpoint(out_dir)
    if found is None:
        return ckpt.Progress(0, 0, 0, 0, 0.0, float("nan"), fingerprint)
    ckpt.check_compatible(ckpt.read_progress(found).fingerprint, fingerprint, out_dir)
    state = ckpt.load_checkpoint(found, model, optimizer, scheduler)
    log.info("resuming from %s (step %d)", found, state.step)
    return state


def _open_log(path: Path, step: int) -> IO[str]:
    """Keep the records of steps ≤ `step` (what the checkpoint covers), drop the rest; open for appending.

    Reading stops at a torn line (a write cut short by a crash); it can only follow the checkpoint's steps.
    """
    kept = []
    lines = (
        path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
        if path.exists() and step > 0
        else []
    )
    for line in lines:
        try:
            record = json.loads(line) if line.endswith("\n") else None
        except json.JSONDecodeError:
            record = None
        if record is None or record["step"] > step:
            break
        kept.append(line)
    atomic_write_text(path, "".join(kept))
    return path.open("a", encoding="utf-8")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _check_data(sequences: Sequence[Sequence_]) -> None:
    if not sequences:
        raise SpilloverError("no training sequences: the training split is empty")
    if not any(len(s.input_ids) > max(s.n_prompt, 1) for s in sequences):
        raise SpilloverError("no training sequence has a target token (every target is empty or truncated)")
