"""What a finished run leaves in its folder: the adapter (LoRA, PEFT format) or the full model, and
`train_result.json`, written last; its presence marks the run complete."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from torch import nn

from spillover.atomic import atomic_dir, atomic_write_text
from spillover.models.adapters import is_peft, save_adapter
from spillover.training.checkpoint import check_compatible
from spillover.training.types import TrainResult

log = logging.getLogger(__name__)
RESULT_FILE = "train_result.json"
LOG_FILE = "train_log.jsonl"


def save_final(
    model: nn.Module,
    tokenizer,
    out_dir: Path,
    final_loss: float,
    n_steps: int,
    n_tokens: int,
    seconds: float,
    fingerprint: str,
) -> TrainResult:
    """Save the trained weights, then the result file (last); return the result."""
    if is_peft(model):
        artifact = out_dir / "adapter"
        save_adapter(model, artifact)
    else:
        artifact = out_dir / "model"
        with atomic_dir(artifact) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    stored = {  # paths relative to out_dir: the folder may move
        "final_loss": final_loss,
        "n_steps": n_steps,
        "n_tokens": n_tokens,
        "seconds": seconds,
        "log_path": LOG_FILE,
        "artifact": artifact.name,
        "fingerprint": fingerprint,
    }
    atomic_write_text(out_dir / RESULT_FILE, json.dumps(stored, indent=2))
    log.info("training finished: %s", out_dir)
    return read_result(out_dir, fingerprint)


def read_result(out_dir: Path, fingerprint: str) -> TrainResult:
    """The stored result of a finished run in `out_dir`; error when it was trained with other settings."""
    stored = json.loads((out_dir / RESULT_FILE).read_text())
    check_compatible(stored["fingerprint"], fingerprint, out_dir)
    stored["log_path"] = out_dir / stored["log_path"]
    stored["artifact"] = out_dir / stored["artifact"]
    return TrainResult(**stored)
