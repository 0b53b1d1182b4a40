"""What every study's jobs share: one loaded base model, adapters swapped on it, the tokenizer, the
embedder and parser for dataset statistics, and the metrics tracker (the job bodies are in `jobs.py` and
each kind's `handlers.py`).

The base model is loaded once per process. A LoRA training job wraps it in a fresh adapter and unloads the
adapter afterwards; an evaluation job loads a saved adapter onto it and unloads it again, so the base
weights are never copied or reloaded. Full fine-tuning trains a separate copy loaded from disk.

Memory: a full fine-tune (the copy, its gradients, AdamW's two moments and the activations) is the
process's peak, so the shared base is set aside while one trains (`release_base`) and loaded again when
next needed (`base_model`; ~1 s, from the page cache). θ0 by name (`base_state`) is a view that looks the
tensors up at each access, so states built on it (`models.deltas.DeltaState`) do not keep a set-aside
base alive. The context also caps glibc's heap blocks (`spillover.memory`): freed tensors go back to the
OS between jobs and steps.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from spillover.config import StudySpec, TrainSettings
from spillover.data.tasks import Example, TaskSpec, load_examples
from spillover.data.transforms import apply_transforms
from spillover.engine.plan import Job, params_json
from spillover.engine.store import Store
from spillover.engine.tracking import RunSpec, Tracker, base_run
from spillover.evaluation.curves import EvalCurves, eval_curves_hook
from spillover.memory import cap_heap_blocks
from spillover.merging.wise import interpolate_, scale_adapter_
from spillover.models.adapters import apply_lora, is_peft, load_adapter
from spillover.models.deltas import compact_model_dir, is_delta_dir, load_delta_into_
from spillover.models.load import load_model, load_tokenizer, resolve_precision
from spillover.training.loop import default_plan, train
from spillover.training.params import load_trainable_
from spillover.training.settings import LoraSpec, prepare_for_training, train_params

log = logging.getLogger(__name__)


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
        cap_heap_blocks()
        self.tracker = Tracker(spec.report_to, spec.output_dir)
        self.precision = resolve_precision(spec.precision, spec.device)
        self._model = None
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
            # frozen: LoRA and evaluation only (full fine-tuning loads its own copy); its weights stay exact
            # (param_dtype), so weight arithmetic (WiSE-FT, CPI-FT) reads θ0 from it
            self._model, self._tokenizer = load_model(self.spec.model, self.precision, frozen=True)
        return self._model

    def release_base(self) -> None:
        """Drop the context's reference to the base model (the next `base_model` loads it again). Its memory
        is freed unless a caller still holds the model or its tensors (`base_state` holds neither)."""
        self._model = None

    def examples(
        self, task: str, split: str, limit: int | None, transforms: list[dict] = ()
    ) -> list[Example]:
        return apply_transforms(load_examples(self.tasks[task], split, limit), list(transforms))

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
        train_tasks: Sequence[str] = (),
        log: Callable[[dict[str, float], int], None] | None = None,
    ):
        """Train on ready sequences; LoRA on the shared base (then unloaded), full FT on a fresh copy.
        `progress`: the per-step callback (default: the context's); `hooks`, `plan`: passed to `train`;
        `start`: trainable parameters to start from instead of θ0 (`training.params.load_trainable_`).
        With `settings.eval_every`, `settings.eval_tasks` (default: `train_tasks`, the tasks the sequences
        come from) are probed during training into `out_dir` (`evaluation.curves`; `log`: the tracking
        run's `RunLogger.log`), on the study's `eval.limit` test rows."""
        params = train_params(settings, self.precision)
        progress = progress or self.progress
        plan = plan or default_plan(sequences, params)
        curves = self._curves(settings, train_tasks, out_dir, plan.n_steps, log)
        hooks = [*hooks, *([curves] if curves else [])]
        result = self._train(sequences, settings, params, out_dir, progress, hooks, plan, start)
        if curves is not None:
            curves.finish()  # a finished run returns without running hooks: the CSV from what is on disk
        return result

    def _train(self, sequences, settings: TrainSettings, params, out_dir, progress, hooks, plan, start):
        if settings.method == "full":
            model, _ = load_model(self.spec.model, self.precision)
            model = prepare_for_training(model, settings)
            load_trainable_(model, start)
            self.release_base()  # not needed while the copy trains; `compact` loads it again
            result = train(model, self.tokenizer, sequences, params, out_dir, progress, hooks, plan)
            del model  # before the base is read for the delta: one trained copy in memory at a time
            self.compact(result.artifact)
            return result
        model = prepare_for_training(self.base_model(), settings)
        try:
            load_trainable_(model, start)
            return train(model, self.tokenizer, sequences, params, out_dir, progress, hooks, plan)
        finally:
            self._model = model.unload()

    @contextlib.contextmanager
    def fresh_lora(self, lora: LoraSpec, seed: int) -> Iterator[Any]:
        """The shared base wrapped in a new, untrained LoRA adapter (`apply_lora`, seeded), unloaded again
        when the block ends (for signals taken at the base model, e.g. `training.gradients`)."""
        model = apply_lora(
            self.base_model(), lora.r, lora.alpha, lora.dropout, lora.target_modules, seed=seed
        )
        try:
            yield model
        finally:
            self._model = model.unload()

    def _curves(
        self, settings: TrainSettings, train_tasks: Sequence[str], out_dir: Path, n_steps: int, log
    ) -> EvalCurves | None:
        """The evaluation-curves hook of a training run when its settings ask for one (`eval_every`)."""
        if settings.eval_every is None:
            return None
        names = list(settings.eval_tasks or train_tasks)
        assert names, "a training run with eval_every needs eval_tasks or the names of its training tasks"
        e = self.spec.eval
        return eval_curves_hook(
            [self.tasks[n] for n in names],
            self.tokenizer,
            out_dir,
            settings.eval_every,
            n_steps,
            limit=e.limit,
            batch_size=e.batch_size,
            max_len=settings.max_len,
            precision=self.precision,
            compile=e.compile,
            log=log,
        )

    def track_scores(self, trained: Job | None, scores: list[dict[str, Any]]) -> None:
        """Log evaluation scores into the evaluated model's run: its training job's (at its last step), or
        the base model's run `base` (at step 0)."""
        if not self.tracker.sinks:
            return
        if trained is None:
            run, step = base_run(self.spec.model, self.spec.precision), 0
        else:
            run = RunSpec(trained.name, trained.id, params_json(trained.params))
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
        model = self.full_model(artifact)
        if alpha != 1.0:
            interpolate_(model, self.base_model(), alpha)
        return model, lambda: None

    def full_model(self, artifact: str | Path):
        """A full fine-tune from its artifact folder: a fresh copy of the base plus its stored Δ (studies keep
        full fine-tunes as bf16 deltas, `models.deltas`), or a plain saved model."""
        if is_delta_dir(artifact):
            model, _ = load_model(self.spec.model, self.precision)
            return load_delta_into_(model, artifact)
        model, _ = load_model(str(artifact), self.precision)
        return model

    def base_state(self) -> Mapping[str, Tensor]:
        """θ0 by parameter name (`named_parameters` names): the shared base model's own tensors (not copies),
        looked up at each access (`BaseState`), loading the base again if it was set aside."""
        return BaseState(self)

    def compact(self, artifact: str | Path) -> None:
        """Store a finished full fine-tune as its bf16 delta against θ0 (`models.deltas`); adapters as they are."""
        if not (Path(artifact) / "adapter_config.json").exists():
            compact_model_dir(artifact, self.base_state())

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


class BaseState(Mapping):
    """θ0 of a context by parameter name, read from its base model at each access: holds no tensor, so the
    base can be set aside (`StudyContext.release_base`) while states that read θ0 lazily are alive."""

    def __init__(self, ctx: StudyContext) -> None:
        self._ctx = ctx
        self._names: dict[str, None] | None = None  # the names only, in `named_parameters` order

    def names(self) -> dict[str, None]:
        if self._names is None:
            self._names = dict.fromkeys(n for n, _ in self._ctx.base_model().named_parameters())
        return self._names

    def __getitem__(self, name: str) -> Tensor:
        if name not in self.names():
            raise KeyError(name)
        return self._ctx.base_model().get_parameter(name).detach()

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
