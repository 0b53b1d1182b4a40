"""Evaluation with behaviour metrics on a held-out slice, and a training hook that runs it at checkpoints
(methods.md §5.3–5.4).

`probe` scores one task on the first `limit` rows of its test split (log-likelihood tasks batched, as
`evaluate_task` does), optionally lets the model generate freely on classification prompts (a few tokens:
what would it *say*?), and computes behaviour statistics (length, label prior, hedging, format, style vs
each training task's outputs). Given the task's held-out rows as training sequences, it also records the
validation loss: the mean cross-entropy of their target tokens (`training.sequence_nll`, exactly as the
loop computes its loss). It writes `predictions.jsonl` then `result.json` into its folder, both
atomically; `result.json` is written last and marks the cell done.

`CheckpointEvaluator` is a `StepHook`: after every `every`-th optimiser step (and the last) it probes
every task into `root/step-NNNNNN/<task>/`, skipping cells whose `result.json` exists. It runs after the
optimiser step and before the loop writes that step's checkpoint, so a crash can only lose evaluations
that the resumed run replays (never one behind a saved checkpoint), and a replayed step finds its
finished cells and does not evaluate them twice. Evaluation runs in eval mode under `inference_mode`
with the RNG states saved and restored, so training is bit-identical with or without it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from spillover.analysis.behaviour import behaviour_stats
from spillover.atomic import atomic_write_text
from spillover.data.collate import Sequence_, pad_id
from spillover.data.stats import style_profile
from spillover.data.tasks import Example, TaskSpec, load_examples
from spillover.evaluation.evaluate import _inference, evaluate_task, write_jsonl_atomic
from spillover.evaluation.generation import generate_for_task
from spillover.evaluation.metrics import extract_answer, normalize_answer
from spillover.evaluation.predictions import read_predictions
from spillover.models.load import Precision
from spillover.training.checkpoint import preserved_rng
from spillover.training.sequence_nll import sequence_nll

RESULT = "result.json"


@dataclass(frozen=True)
class ProbeSettings:
    """limit: held-out test rows per task; free_tokens: free generation length on classification prompts
    (0 = none); hedges: hedge/refusal phrases; max_new_tokens: cap on generation tasks' own limit;
    compile: compiled scoring (`evaluation.scoring`)."""

    limit: int | None = 64
    batch_size: int = 16
    free_tokens: int = 8
    hedges: tuple[str, ...] = ()
    max_new_tokens: int | None = None
    compile: Literal["auto"] | bool = "auto"


def style_references(train: dict[str, Sequence[Example]]) -> dict[str, list[float]]:
    """Each training task's output style profile (its targets), to compare model outputs with."""
    return {name: style_profile([e.target for e in examples]).tolist() for name, examples in train.items()}


def expected_format(task: TaskSpec) -> Callable[[str], bool]:
    """Is a text a well-formed answer? Classification / multiple choice: its first line, normalised
    (lower case, no punctuation or articles), starts with a label (or an option letter); generation: the
    task's answer extraction finds something (a number for `last_number`, a non-empty line, code)."""
    if task.type == "generation":
        return lambda text: bool(extract_answer(text, task.extract).strip())
    labels = [normalize_answer(x) for x in task.labels or ()]

    def ok(text: str) -> bool:
        first = normalize_answer(extract_answer(text, "first_line"))
        if task.type == "multiple_choice":
            return bool(first) and first[0] in "abcdefghij" and (len(first) == 1 or not first[1].isalpha())
        return any(first == lab or first.startswith(lab + " ") for lab in labels)

    return ok


def probe(
    model,
    tokenizer,
    task: TaskSpec,
    settings: ProbeSettings,
    styles: dict[str, list[float]],
    folder: Path,
    precision: Precision | None = None,
    loss_sequences: Sequence[Sequence_] | None = None,
) -> dict[str, Any]:
    """Score + behaviour of `model` on `task`'s held-out slice; writes folder/{predictions.jsonl, result.json}.
    `loss_sequences`: the same rows as training sequences; the result then has `val_loss` (mean target-token
    cross-entropy, nats) and `n_loss_tokens`."""
    preds = folder / "predictions.jsonl"
    if task.type == "generation" and settings.max_new_tokens is not None:
        task = task.model_copy(update={"max_new_tokens": min(task.max_new_tokens, settings.max_new_tokens)})
    r = evaluate_task(
        model,
        tokenizer,
        task,
        limit=settings.limit,
        batch_size=settings.batch_size,
        precision=precision,
        predictions_path=preds,
        compile=settings.compile,
    )
    rows = read_predictions(preds)
    if task.type != "generation" and settings.free_tokens > 0:
        free = task.model_copy(update={"max_new_tokens": settings.free_tokens})
        with _inference(model, precision):
            _, gens = generate_for_task(
                model,
                tokenizer,
                free,
                load_examples(task, "test", settings.limit),
                batch_size=settings.batch_size,
            )
        rows = [{**row, "free_text": g.text} for row, g in zip(rows, gens, strict=True)]
        write_jsonl_atomic(preds, rows)
    behaviour = behaviour_stats(
        rows, tokenizer, hedges=settings.hedges, format_ok=expected_format(task), styles=styles
    )
    result = {
        "task": task.name,
        "metric": r.metric,
        "value": r.value,
        "n": r.n,
        "ci_low": r.ci_low,
        "ci_high": r.ci_high,
        "beside": [
            {"metric": m.metric, "value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high} for m in r.beside
        ],
        "behaviour": behaviour.to_dict(),
    }
    if loss_sequences is not None:
        result |= validation_loss(model, tokenizer, loss_sequences, settings.batch_size, precision)
    atomic_write_text(folder / RESULT, json.dumps(result, default=str))
    return result


def validation_loss(
    model, tokenizer, sequences: Sequence[Sequence_], batch_size: int, precision: Precision | None = None
) -> dict[str, Any]:
    """{"val_loss": Σ NLL / Σ target tokens over `sequences` (nats; None without target tokens),
    "n_loss_tokens"}: the loop's token-mean cross-entropy, in eval mode, without gradients."""
    nll = sequence_nll(model, sequences, pad_id(tokenizer), precision, batch_size)
    n_tokens = sum(len(t) for t in nll)
    total = sum(float(t.double().sum()) for t in nll)
    return {"val_loss": total / n_tokens if n_tokens else None, "n_loss_tokens": n_tokens}


class CheckpointEvaluator:
    """A StepHook probing every task after every `every`-th step and the last (`n_steps`), into `root`.
    `loss_sequences`: task name -> its probe rows as training sequences, for the validation loss."""

    def __init__(
        self,
        tasks: Sequence[TaskSpec],
        tokenizer,
        settings: ProbeSettings,
        styles: dict[str, list[float]],
        root: Path,
        every: int,
        n_steps: int,
        precision: Precision | None = None,
        loss_sequences: Mapping[str, Sequence[Sequence_]] | None = None,
    ) -> None:
        self.tasks, self.tokenizer, self.settings, self.styles = list(tasks), tokenizer, settings, styles
        self.root, self.every, self.n_steps, self.precision = Path(root), every, n_steps, precision
        self.loss_sequences = dict(loss_sequences or {})
        self.n_probes = 0  # cells evaluated by this object (finished cells found on disk are not counted)

    def before_optimizer_step(self, model, optimizer, step: int) -> None:
        pass

    def after_optimizer_step(self, model, optimizer, step: int) -> None:
        if self.due(step + 1):
            self.evaluate(model, step + 1)

    def due(self, done: int) -> bool:
        """Is the state after `done` optimiser steps probed? (every `every`-th and the last)"""
        return done % self.every == 0 or done == self.n_steps

    def evaluate(self, model, step: int) -> None:
        for task in self.tasks:
            folder = self.root / f"step-{step:06d}" / task.name
            if (folder / RESULT).exists():
                continue
            losses = self.loss_sequences.get(task.name)
            with preserved_rng():
                probe(model, self.tokenizer, task, self.settings, self.styles, folder, self.precision, losses)
            self.n_probes += 1


def collect(root: Path) -> list[dict[str, Any]]:
    """Every finished probe under `root` (step-NNNNNN/<task>/result.json) with its `step`, in step order."""
    out = []
    for path in sorted(Path(root).glob(f"step-*/*/{RESULT}")):
        out.append(
            {"step": int(path.parent.parent.name.removeprefix("step-"))} | json.loads(path.read_text())
        )
    return out
