"""Fine-tuning: the one explicit loop (`train`), its plain-value parameters and result, objectives,
regularisers, resumable checkpoints. See docs/training.md."""

from spillover.training.loop import train
from spillover.training.types import StepHook, StepRecord, TrainParams, TrainResult

__all__ = ["StepHook", "StepRecord", "TrainParams", "TrainResult", "train"]
