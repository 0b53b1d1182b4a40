"""What every study's jobs share: one loaded base model, adapters swapped on it, and the job bodies for
training, evaluating and computing dataset statistics.

The base model is loaded once per process. A LoRA training job wraps it in a fresh adapter and unloads the
adapter afterwards; an evaluation job loads a saved adapter onto it and unloads it again, so the base
weights are never copied or reloaded. Full fine-tuning trains a separate copy loaded from disk.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from spillover.api import prepare_for_training, train_params
from spillover.config import StudySpec, TrainSettings
from spillover.data.sft import build_sequences
from spillover.data.tasks import Example, TaskSpec, load_examples
from spillover.data.transforms import apply_transforms
from spillover.engine.plan import Job
from spillover.engine.store import Store
from spillover.engine.tracking import RunSpec, Tracker, base_run, compose
from spillover.errors import SpilloverError
from spillover.evaluation.evaluate import evaluate_task
from spillover.merging.wise import interpolate_, scale_adapter_
from spillover.models.adapters import is_peft, load_adapter
from spillover.models.load import load_model, load_tokenizer, resolve_precision
from spillover.training.loop import train
from spillover.training.params import load_trainable_

log = logging.getLogger(__name__)
JobOutput = tuple[dict[str, Any], list[dict[str, Any]]]


class StudyContext:
    """Resources for one study run: spec, resolved tasks, the store, the lazily loaded base model, and the
    metrics tracker (`report_to`; logs nothing when that is empty)."""

    def __init__(
        self,
        spec: StudySpec,
        tasks: dict[str, TaskSpec],
        store: Store,
        progress: Callable[[dict], None] | None = None,
    ) -> None:
        self.spec, self.tasks, self.store, self.progress = spec, tasks, store, progress
        self.tracker = Tracker(spec.report_to, spec.output_dir)
        self.precision = resolve_precision(spec.precision, spec.device)
        self._model = None
        self._exact = None
        self._tokenizer = None
        self._embedder: Any = ...  # ... = not loaded yet; None = unavailable
        self._parser: Any = ...

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.spec.model)
        return self._tokenizer

    def base_model(self):
        if self._model is None:
            # frozen: LoRA and evaluation only (full fine-tuning loads its own copy)
            self._model, self._tokenizer = load_model(self.spec.model, self.precision, frozen=True)
        return self._model

    def exact_base(self):
        """The base model with every weight in `param_dtype`, for arithmetic on weights (WiSE-FT of a full
        fine-tune, CPI-FT's update magnitudes): `base_model()` stores frozen linears rounded to the compute
        dtype, exact under autocast but not as θ0 (the rounding, ~2⁻⁹ relative, can exceed a fine-tune's
        whole update). Loaded on first use, then kept."""
        if self._exact is None:
            self._exact, _ = load_model(self.spec.model, self.precision)
        return self._exact

    def examples(
        self, task: str, split: str, limit: int | None, transforms: list[dict] = ()
    ) -> list[Example]:
        return apply_transforms(load_examples(self.tasks[task], split, limit), list(transforms))

    # ---- job bodies -------------------------------------------------------------------------------------

    def train_job(self, job: Job, examples: list[Example] | None = None) -> JobOutput:
        """params: task, transforms, train (TrainSettings dict). Trains in the job's folder (resumable)."""
        p = job.params
        settings = TrainSettings.for_job(p["train"], self.spec.train)
        if settings.mixture is not None:  # one task per job here: a mixture would be silently meaningless
            raise SpilloverError(
                f"{job.name}: train.mixture needs several tasks (the mixture study or `spillover train`)"
            )
        if examples is None:
            examples = self.examples(p["task"], "train", settings.limit, p.get("transforms", []))
        seqs = build_sequences(
            self.tasks[p["task"]],
            self.tokenizer,
            examples,
            settings.max_len,
            settings.shots,
            settings.seed,
            demos=settings.demos,
        )
        with self.tracker.run(RunSpec(job.name, job.id, job.params), training=True) as run:
            progress = compose(self.progress, run.log_record)
            result = self.train_sequences(seqs, settings, self.store.job_dir(job.id), progress)
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(result).items()}, []

    def train_sequences(
        self,
        sequences,
        settings: TrainSettings,
        out_dir: Path,
        progress=None,
        *,
        hooks=(),
        plan=None,
        start=None,
    ):
        """Train on ready sequences; LoRA on the shared base (then unloaded), full FT on a fresh copy.
        `progress`: the per-step callback (default: the context's); `hooks`, `plan`: passed to `train`;
        `start`: trainable parameters to start from instead of θ0 (`training.params.load_trainable_`)."""
        params = train_params(settings, self.precision)
        progress = progress or self.progress
        if settings.method == "full":
            model, _ = load_model(self.spec.model, self.precision)
            model = prepare_for_training(model, settings)
            load_trainable_(model, start)
            return train(model, self.tokenizer, sequences, params, out_dir, progress, hooks, plan)
        model = prepare_for_training(self.base_model(), settings)
        try:
            load_trainable_(model, start)
            return train(model, self.tokenizer, sequences, params, out_dir, progress, hooks, plan)
        finally:
            self._model = model.unload()

    def eval_job(self, job: Job, artifact: str | None, label: str, alpha: float = 1.0) -> JobOutput:
        """params: target, eval (EvalSettings dict). `artifact`: an adapter or full-model folder, or None;
        `alpha` < 1: evaluate its WiSE-FT interpolation with the base (see `_model_for`)."""
        p, e = job.params, job.params["eval"]
        task = self.tasks[p["target"]]
        folder = self.store.job_dir(job.id)
        model, restore = self._model_for(artifact, alpha)
        try:
            r = evaluate_task(
                model,
                self.tokenizer,
                task,
                limit=e["limit"],
                shots=e["shots"],
                seed=e["seed"],
                batch_size=e["batch_size"],
                precision=self.precision,
                compile=self.spec.eval.compile,
                predictions_path=folder / "predictions.jsonl",
            )
        finally:
            restore()
        from spillover.analysis.behaviour import behaviour_stats

        rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines() if line]
        behaviour = behaviour_stats(rows, self.tokenizer).to_dict()
        score = {
            "model": label,
            "target": task.name,
            "metric": r.metric,
            "value": r.value,
            "n": r.n,
            "ci_low": r.ci_low,
            "ci_high": r.ci_high,
            "shots": r.shots,
            "extra": r.extra,
        }
        return {"result": asdict(r), "behaviour": behaviour}, [score]

    def track_scores(self, trained: Job | None, scores: list[dict[str, Any]]) -> None:
        """Log evaluation scores into the evaluated model's run: its training job's (at its last step), or
        the base model's run `base` (at step 0)."""
        if not self.tracker.sinks:
            return
        if trained is None:
            run, step = base_run(self.spec.model, self.spec.precision), 0
        else:
            run = RunSpec(trained.name, trained.id, trained.params)
            step = self.store.result(trained.id)["n_steps"]
        with self.tracker.run(run) as logger:
            logger.log_scores(scores, step)

    @contextlib.contextmanager
    def loaded(self, artifact: str | None, alpha: float = 1.0):
        """The model to evaluate (see `_model_for`) for the duration of the block."""
        model, restore = self._model_for(artifact, alpha)
        try:
            yield model
        finally:
            restore()

    def _model_for(self, artifact: str | None, alpha: float = 1.0):
        """(model, restore): the base, the base + a loaded adapter, or a full fine-tuned copy. `alpha` < 1:
        WiSE-FT θ0 + α·(θ_ft − θ0), exactly — the loaded adapter's B scaled by α, or the full copy
        interpolated in memory with the shared base (`merging.wise`); nothing is written to disk."""
        if artifact is None:
            return self.base_model(), lambda: None
        if (Path(artifact) / "adapter_config.json").exists():
            model = load_adapter(self.base_model(), artifact)
            if alpha != 1.0:
                scale_adapter_(model, alpha)  # on this loaded copy only; unloading below discards it

            def restore() -> None:
                self._model = model.unload() if is_peft(model) else model

            return model, restore
        model, _ = load_model(artifact, self.precision)
        if alpha != 1.0:
            interpolate_(model, self.exact_base(), alpha)
        return model, lambda: None

    def stats_job(self, job: Job) -> JobOutput:
        """params: task, split, limit, transforms, sample. Dataset statistics of that data."""
        from spillover.data.stats import dataset_stats

        p = job.params
        task = self.tasks[p["task"]]
        examples = self.examples(p["task"], p["split"], p["limit"], p.get("transforms", []))
        stats = dataset_stats(
            examples,
            self.tokenizer,
            task.labels,
            embedder=self.embedder(),
            parser=self.parser(),
            max_sample=p["sample"],
            seed=self.spec.seed,
        )
        return stats.to_dict(), []

    def embedder(self):
        if self._embedder is ...:
            from spillover.analysis.embedder import load_minilm

            self._embedder = load_minilm()
        return self._embedder

    def parser(self):
        if self._parser is ...:
            from spillover.data.stats import load_parser

            self._parser, note = load_parser()
            if note:
                log.info(note)
        return self._parser
