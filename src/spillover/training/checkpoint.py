"""Atomic, resumable training checkpoints (only the latest is kept).

Layout: `out_dir/checkpoints/step-000042/` holding
  trainable.safetensors  the trainable parameters only (LoRA: adapter weights; full FT: every parameter)
  state.pt               optimiser + scheduler state and the python/numpy/torch RNG states
  progress.json          global step, epoch, batch index within the epoch's batch order, counters, and the
                         run fingerprint (a hash of everything that changes the result)
A checkpoint is written into a temporary folder and renamed into place (os.replace), so a `step-*` folder
is always complete; older ones (and temporaries of a killed write) are deleted afterwards. A crash at any
point leaves a loadable checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from spillover.atomic import atomic_dir, remove_stale_temps, remove_tree
from spillover.data.collate import Sequence_
from spillover.errors import SpilloverError
from spillover.training.params import trainable

log = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class Progress:
    """Where training stands: optimiser steps done, and the data position of the next step."""

    step: int
    epoch: int
    batch_index: int
    n_tokens: int
    seconds: float
    last_loss: float
    fingerprint: str


def fingerprint(
    settings: dict[str, Any],
    sequences: Sequence[Sequence_],
    model: nn.Module,
    weights: torch.Tensor | None = None,
) -> str:
    """Hash of the result-affecting settings, the training data (and per-sequence loss weights, when the
    objective uses them) and the trainable parameters' names/shapes."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for s in sequences:
        h.update(np.asarray([s.n_prompt, len(s.input_ids), *s.input_ids], dtype=np.int64).tobytes())
    if weights is not None:
        h.update(weights.detach().cpu().float().numpy().tobytes())
    for name, p in trainable(model).items():
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
    return h.hexdigest()[:16]


def check_compatible(found: str, expected: str, where: Path) -> None:
    if found != expected:
        raise SpilloverError(
            f"{where} holds a run with different settings, data or model (fingerprint {found}, this run "
            f"{expected}); use a new output folder, or delete {where} to start over"
        )


def save_checkpoint(
    out_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    progress: Progress,
) -> Path:
    """Write the checkpoint for `progress.step` atomically; delete older ones. Returns its folder."""
    root = out_dir / CHECKPOINTS
    final = root / f"step-{progress.step:06d}"
    with atomic_dir(final) as tmp:
        weights = {n: p.detach().contiguous() for n, p in trainable(model).items()}
        save_file(weights, tmp / "trainable.safetensors")
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_state(),
        }
        torch.save(state, tmp / "state.pt")
        (tmp / "progress.json").write_text(json.dumps(asdict(progress), indent=2))
    for old in root.glob("step-*"):
        if old != final:
            remove_tree(old)  # renamed away first: no half-deleted checkpoint is ever visible
    remove_stale_temps(root, "step-*")  # a checkpoint write that was killed (another step's name)
    log.debug("checkpoint written: %s", final)
    return final


def latest_checkpoint(out_dir: Path) -> Path | None:
    found = sorted((out_dir / CHECKPOINTS).glob("step-*"))
    return found[-1] if found else None


def read_progress(checkpoint: Path) -> Progress:
    return Progress(**json.loads((checkpoint / "progress.json").read_text()))


def load_checkpoint(
    checkpoint: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> Progress:
    """Restore weights, optimiser, scheduler and RNG states in place; return the saved progress."""
    load_trainable(checkpoint, model)
    state = torch.load(checkpoint / "state.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return read_progress(checkpoint)


def load_trainable(checkpoint: Path, model: nn.Module) -> None:
    """Copy the checkpoint's trainable weights into `model` in place."""
    weights = load_file(checkpoint / "trainable.safetensors")
    params = trainable(model)
    if set(weights) != set(params):
        raise SpilloverError(f"{checkpoint}: its parameters do not match the model being trained")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(weights[name])


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block (e.g. an evaluation during training) without moving the python/numpy/torch RNGs."""
    state = _rng_state()
    try:
        yield
    finally:
        _set_rng_state(state)


def _rng_state() -> dict[str, Any]:
    """RNG states as plain lists and tensors, so `torch.load(weights_only=True)` can read them back."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
