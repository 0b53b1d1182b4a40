"""Per-task evaluation curves during any training run (`eval_every`, `eval_tasks`; docs/training.md).

`EvalCurves` is a loop `StepHook` around the checkpoint probes (`checkpoint_eval.CheckpointEvaluator`):
it probes every eval task before the first optimiser step (step 0: the starting weights) and after every
`eval_every`-th step and the last, each probe on the task's held-out slice (score with its 95% bootstrap
interval, the metrics reported beside it, and the validation loss: mean target-token cross-entropy of
the same rows as training sequences). Probe records go to `<run>/probes/step-NNNNNN/<task>/` as in the
mixture study (written atomically, `result.json` last; a resumed run finds them and does not probe them
again), and after each probed step the whole table is rewritten atomically as `<run>/eval_curves.csv`:

    step, task, metric, value, n, ci_low, ci_high, val_loss, n_loss_tokens

one row per probed step × task × metric (the task's own metric first); `val_loss` and `n_loss_tokens` are
the task's at that step, repeated on each of its metric rows. `log(values, step)`, when given (a tracking
run's `RunLogger.log`), receives `val/<task>/loss` and `val/<task>/<metric>` at every probed step.

Training is unchanged by probing (eval mode, `inference_mode`, RNG states restored: bit-identical losses).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from spillover.atomic import atomic_write_text
from spillover.data.collate import Sequence_
from spillover.data.sft import build_sequences
from spillover.data.tasks import TaskSpec, load_examples
from spillover.evaluation.checkpoint_eval import CheckpointEvaluator, ProbeSettings, collect
from spillover.models.load import Precision

log = logging.getLogger(__name__)

CURVES_FILE = "eval_curves.csv"
PROBES = "probes"  # probe records under the run folder: probes/step-NNNNNN/<task>/
COLUMNS = ["step", "task", "metric", "value", "n", "ci_low", "ci_high", "val_loss", "n_loss_tokens"]


def probe_steps(every: int, n_steps: int) -> list[int]:
    """The steps a run of `n_steps` optimiser steps is probed at: 0, every, 2·every, …, and n_steps."""
    return sorted({0, n_steps, *range(every, n_steps + 1, every)})


def curve_rows(results: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Probe results (`checkpoint_eval.collect`) → CSV rows: one per result × metric (own metric first)."""
    rows = []
    for r in results:
        loss = {"val_loss": r.get("val_loss"), "n_loss_tokens": r.get("n_loss_tokens")}
        for m in [r, *r.get("beside", [])]:
            rows.append(
                {"step": r["step"], "task": r["task"], "metric": m["metric"], "value": m["value"]}
                | {"n": r["n"], "ci_low": m["ci_low"], "ci_high": m["ci_high"]}
                | loss
            )
    return rows


def curve_metrics(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """One step's CSV rows → tracking scalars: `val/<task>/<metric>` and `val/<task>/loss`."""
    values = {}
    for row in rows:
        values[f"val/{row['task']}/{row['metric']}"] = row["value"]
        if row["val_loss"] is not None:
            values[f"val/{row['task']}/loss"] = row["val_loss"]
    return {k: float(v) for k, v in values.items() if v is not None}


def write_curves(probes: Path, path: Path) -> list[dict[str, Any]]:
    """Every finished probe under `probes` as `path` (CSV, atomically). Returns the rows."""
    rows = curve_rows(collect(probes))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())
    return rows


def loss_sequences(
    tasks: Sequence[TaskSpec], tokenizer, limit: int | None, max_len: int
) -> dict[str, list[Sequence_]]:
    """Each task's probe rows (the first `limit` test rows) as zero-shot training sequences: prompt masked,
    target scored, cut to `max_len` as training cuts them."""
    return {t.name: build_sequences(t, tokenizer, load_examples(t, "test", limit), max_len) for t in tasks}


class EvalCurves:
    """A StepHook: probe `evaluator`'s tasks at step 0 and at its due steps, rewrite `<run>/eval_curves.csv`
    after each, and send the step's values to `log` (see the module docstring)."""

    def __init__(
        self,
        evaluator: CheckpointEvaluator,
        run_dir: Path,
        log: Callable[[dict[str, float], int], None] | None = None,
    ) -> None:
        self.evaluator, self.path, self.log = evaluator, Path(run_dir) / CURVES_FILE, log

    def before_optimizer_step(self, model, optimizer, step: int) -> None:
        # the first step's gradients exist but no weight has moved yet: this is the starting state
        if step == 0:
            self.probe(model, 0)

    def after_optimizer_step(self, model, optimizer, step: int) -> None:
        if self.evaluator.due(step + 1):
            self.probe(model, step + 1)

    def probe(self, model, step: int) -> None:
        """Probe `step` (cells found on disk are kept), rewrite the CSV, log the step's values. A step
        replayed after a resume is logged again: the tracker's resume handling keeps one clean curve."""
        self.evaluator.evaluate(model, step)
        rows = write_curves(self.evaluator.root, self.path)
        if self.log is not None:
            self.log(curve_metrics(r for r in rows if r["step"] == step), step)

    def finish(self) -> list[int]:
        """After training: rewrite the CSV from what is on disk (a finished run returns without running its
        hooks) and warn about probe steps without results, e.g. of a run that had passed them before
        `eval_every` was set (its weights at those steps are gone). Returns those steps."""
        rows = write_curves(self.evaluator.root, self.path)
        found = {r["step"] for r in rows}
        missing = [s for s in probe_steps(self.evaluator.every, self.evaluator.n_steps) if s not in found]
        if missing:
            log.warning(
                "%s: no probes at steps %s: the run had passed them before eval_every was set; train into a "
                "new output folder for complete curves",
                self.path.parent,
                ", ".join(map(str, missing)),
            )
        return missing


def eval_curves_hook(
    tasks: Sequence[TaskSpec],
    tokenizer,
    run_dir: Path,
    every: int,
    n_steps: int,
    *,
    limit: int | None,
    batch_size: int,
    max_len: int,
    precision: Precision | None = None,
    compile: bool | str = "auto",
    log: Callable[[dict[str, float], int], None] | None = None,
) -> EvalCurves:
    """The hook for one run: `tasks` probed on their first `limit` test rows (zero-shot, no free generation,
    the tasks' own generation limits) every `every` of `n_steps` steps, into `run_dir`."""
    settings = ProbeSettings(limit=limit, batch_size=batch_size, free_tokens=0, compile=compile)
    losses = loss_sequences(tasks, tokenizer, limit, max_len)
    root = Path(run_dir) / PROBES
    evaluator = CheckpointEvaluator(tasks, tokenizer, settings, {}, root, every, n_steps, precision, losses)
    return EvalCurves(evaluator, run_dir, log)
