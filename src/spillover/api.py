"""The Python API behind `spillover train` and `spillover eval`: validated specs in, results out.

    from spillover.api import run_training, run_evaluation
    from spillover.config import TrainSpec
    run_training(TrainSpec(tasks=["sst2"], output_dir="runs/sst2", limit=256, eval_tasks=["sst2"]))

Everything that can fail on user input (task names, data rows, model names) is checked before the output
folder is created, so a bad call leaves nothing half-written.

`train_params` and `prepare_for_training` (a `train:` section as the loop's parameters; a model wrapped for
LoRA or made fully trainable) live in `training/settings.py` and are re-exported here.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from spillover.atomic import atomic_write_text
from spillover.config import TrainSettings, TrainSpec, dump_spec, resolve_named
from spillover.data.sft import build_multitask_sequences
from spillover.data.tasks import TaskSpec, load_examples, resolve_tasks
from spillover.engine.plan import content_hash
from spillover.engine.tracking import RunSpec, Tracker, base_run, check_report_to, compose
from spillover.errors import SpilloverError
from spillover.evaluation.curves import CURVES_FILE, EvalCurves, eval_curves_hook
from spillover.evaluation.evaluate import evaluate_tasks
from spillover.harness.tasks import LmEvalTarget, check_target, is_lm_eval_name
from spillover.memory import cap_heap_blocks
from spillover.models.adapters import base_only, load_adapter, unload_adapter
from spillover.models.load import load_model, resolve_precision
from spillover.training import distributed
from spillover.training.artifacts import LOG_FILE
from spillover.training.loop import default_plan, train
from spillover.training.mixture_plan import MixturePlan, plan_for_settings
from spillover.training.settings import prepare_for_training, train_params  # re-exported: public API

log = logging.getLogger(__name__)
PROBE_BATCH = 16  # prompts per batch of the probes during training (`eval_every`)


def mixture_plan(
    settings: TrainSettings, tasks: list[str], sizes: list[int], sequences
) -> MixturePlan | None:
    """The `mixture:` section as the loop's step plan over the tasks' concatenated sequences (task order =
    `tasks`, `sizes[i]` sequences each); None without a mixture (plain length-bucketed concatenation)."""
    return plan_for_settings(settings, tasks, sizes, sequences)


def run_training(spec: TrainSpec, progress: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Fine-tune, then (optionally) evaluate the base and the tuned model. Resumes an interrupted run.
    `report_to`: the training curves and scores also go to TensorBoard / MLflow (run `train`; `base`).

    Launched as several processes (torchrun / accelerate launch), every process trains its share of each
    step (`training.distributed`); rank 0 alone writes files, evaluates and reports (docs/scaling.md)."""
    check_report_to(spec.report_to, spec.output_dir)
    cap_heap_blocks()  # freed activations go back to the OS, as in a study (memory.py)
    harness = [n for n in spec.eval_tasks if is_lm_eval_name(n)]
    if harness and spec.eval_every:
        raise SpilloverError(
            f"eval_tasks: {harness[0]} is an lm-eval task; with eval_every the eval tasks are probed during "
            "training, which takes spillover tasks (their validation loss needs the task's target text): "
            "evaluate lm-eval tasks after training (without eval_every) or with `spillover eval`"
        )
    train_tasks = resolve_tasks(spec.tasks, spec.tasks_file)
    eval_tasks = resolve_named("eval_tasks", spec.eval_tasks, spec.tasks_file)
    probe_tasks = (eval_tasks or train_tasks) if spec.eval_every else []
    parts = [(t, load_examples(t, "train", spec.limit)) for t in train_tasks]
    if spec.mixture is not None:  # bad ratio names fail here, before anything is written
        spec.mixture.to_schedule([t.name for t, _ in parts], [len(ex) for _, ex in parts])
    for task in eval_tasks:  # fail on bad evaluation data now, not after an hour of training
        _check_eval_data(task, spec.eval_limit, spec.eval_shots)
    for task in probe_tasks:  # the rows probed during training (zero-shot)
        _check_eval_data(task, spec.eval_limit, 0)
    precision = distributed.join(resolve_precision(spec.precision, spec.device))
    world = distributed.current()
    world.check_grad_accum(spec.grad_accum)
    model, tokenizer = load_model(spec.model, precision, frozen=spec.method == "lora")
    sequences = build_multitask_sequences(parts, tokenizer, spec.max_len, spec.shots, spec.seed, spec.demos)
    plan = mixture_plan(spec, [t.name for t, _ in parts], [len(ex) for _, ex in parts], sequences)
    params = train_params(spec, precision)
    steps = plan or default_plan(sequences, params)
    out = Path(spec.output_dir)
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", dump_spec(spec))
    summary: dict[str, Any] = {"output_dir": str(out)}
    tracker = Tracker(spec.report_to if world.is_main else [], out)
    run = RunSpec("train", f"train-{content_hash(str(out.resolve()))}", spec.model_dump(mode="json"))
    if eval_tasks and spec.eval_base and world.is_main:
        summary["eval_base"] = _evaluate_once(
            model, tokenizer, eval_tasks, spec, precision, out / "eval-base", base=True
        )
        _track_scores(tracker, base_run(spec.model, spec.precision), summary["eval_base"], 0)
    model = prepare_for_training(model, spec)
    with tracker.run(run, training=True) as logger:
        progress = compose(progress, logger.log_record)
        hooks = []
        if probe_tasks and world.is_main:  # rank 0 alone evaluates (the others wait at the next step)
            hooks = [_curves_hook(spec, probe_tasks, tokenizer, out, steps.n_steps, precision, logger.log)]
        # a finished run returns its stored result and loads the trained weights into `model`
        result = train(model, tokenizer, sequences, params, out, progress, hooks, plan=steps)
    summary["train"] = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(result).items()}
    if plan is not None:
        summary["mixture"] = plan.summary()
    if eval_tasks and world.is_main:
        summary["eval"] = _evaluate_once(model, tokenizer, eval_tasks, spec, precision, out / "eval")
        _track_scores(tracker, run, summary["eval"], result.n_steps)
    if hooks:
        hooks[0].finish()
        summary["eval_curves"] = str(out / CURVES_FILE)
        summary["report"] = str(write_train_report(out))
    return summary


def _curves_hook(spec: TrainSpec, tasks, tokenizer, out: Path, n_steps: int, precision, log) -> EvalCurves:
    """Probes `tasks` every `eval_every` steps on their first `eval_limit` test rows (docs/training.md)."""
    return eval_curves_hook(
        tasks,
        tokenizer,
        out,
        spec.eval_every,
        n_steps,
        limit=spec.eval_limit,
        batch_size=PROBE_BATCH,
        max_len=spec.max_len,
        precision=precision,
        log=log,
    )


def write_train_report(out: str | Path) -> Path:
    """`<out>/report.html` of a `spillover train` run folder: the evaluation curves (eval_curves.csv), the
    training loss (train_log.jsonl), and the scores of the base and tuned models when evaluated."""
    import pandas as pd
    import yaml

    from spillover.report.curves import curves_section, training_loss_section
    from spillover.report.html import Section, render_report, write_report

    out = Path(out)
    if not (out / CURVES_FILE).exists():
        raise SpilloverError(
            f"{out} has no {CURVES_FILE}: train with eval_every set to get curves and a report"
        )
    settings = yaml.safe_load((out / "config.yaml").read_text()) if (out / "config.yaml").exists() else {}
    curves = pd.read_csv(out / CURVES_FILE).assign(model=out.resolve().name)
    sections = [curves_section(curves)]
    if (out / LOG_FILE).exists():
        records = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines() if line.strip()]
        sections.append(training_loss_section(pd.DataFrame(records)))
    tables = []
    for name, folder in (("base model", "eval-base"), ("tuned model", "eval")):
        if (out / folder / "results.json").exists():
            rows = json.loads((out / folder / "results.json").read_text())
            cols = ["task", "metric", "value", "n", "ci_low", "ci_high", "shots"]
            tables.append((f"Scores of the {name} ({folder}/)", pd.DataFrame(rows)[cols]))
    if tables:
        sections.append(Section("scores", "Scores after training", tables=tables))
    title = f"spillover train: {settings.get('model', '')} → {out.name}"
    return write_report(out / "report.html", render_report(title, sections, settings))


def adapter_labels(adapters: Sequence[str | Path]) -> list[str]:
    """Each adapter's label: the shortest tail of its path that tells it from the others ("adapter", or
    "seed1/adapter" and "seed2/adapter"); numbered ("-1", "-2") when two paths are the same."""
    parts = [Path(a).resolve().parts for a in adapters]
    for k in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-k:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{label}-{i + 1}" for i, label in enumerate(labels)]


def _check_eval_data(task: TaskSpec | LmEvalTarget, limit: int | None, shots: int) -> None:
    """Read every test row the evaluation will use (and the train split its demonstrations come from);
    an lm-eval target: build its task and requests."""
    if isinstance(task, LmEvalTarget):
        return check_target(task, limit, shots)
    load_examples(task, "test", limit)
    if shots:
        load_examples(task, "train")


def _track_scores(tracker: Tracker, run: RunSpec, rows: list[dict], step: int) -> None:
    with tracker.run(run) as logger:
        logger.log_scores([{**r, "target": r["task"]} for r in rows], step)


def _evaluate_once(
    model, tokenizer, tasks: list[TaskSpec], spec: TrainSpec, precision, folder: Path, base: bool = False
) -> list[dict]:
    """Evaluate once per folder: `folder/results.json` is written last and reused on re-runs.
    `base`: score the plain base model (adapters bypassed)."""
    done = folder / "results.json"
    if done.exists():
        return json.loads(done.read_text())
    with base_only(model) if base else contextlib.nullcontext():
        results = evaluate_tasks(
            model,
            tokenizer,
            tasks,
            predictions_dir=folder,
            limit=spec.eval_limit,
            shots=spec.eval_shots,
            seed=spec.seed,
            precision=precision,
        )
    rows = [asdict(r) for r in results]
    atomic_write_text(done, json.dumps(rows, indent=2))
    return rows


def run_evaluation(
    model: str,
    tasks: list[str],
    *,
    adapter: str | Path | Sequence[str | Path] | None = None,
    tasks_file: str | None = None,
    lm_eval_include: Sequence[str | Path] = (),
    limit: int | None = None,
    shots: int = 0,
    seed: int = 0,
    batch_size: int = 16,
    precision: str = "auto",
    compile: Literal["auto"] | bool = "auto",
    out_dir: str | Path = "eval-out",
    json_path: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate a model (optionally with a PEFT adapter) on tasks; per-example predictions go to out_dir.
    `compile=True`: scoring runs its forward passes compiled (`evaluation.scoring`). `lm_eval:TASK` tasks
    are lm-evaluation-harness tasks, looked up in the `lm_eval_include` folders first (`harness.tasks`).

    Several adapters (a list): the base model is loaded once and each adapter in turn is applied, evaluated
    on every task and removed. Predictions go to `out_dir/<label>/`, label = the shortest tail of the
    adapter's path that is unique (`adapter_labels`); the payload then has `adapters` ({label: {adapter, tasks}}) and `rows`
    (one per adapter and task: the results table)."""
    specs = resolve_tasks(tasks, tasks_file, lm_eval_include)
    for task in specs:
        _check_eval_data(task, limit, shots)
    adapters = [adapter] if isinstance(adapter, str | Path) else list(adapter or [])
    for path in adapters:  # every adapter checked before the model is loaded
        if not (Path(path) / "adapter_config.json").exists():
            raise SpilloverError(f"adapter {path}: not a saved PEFT adapter (no adapter_config.json in it)")
    prec = resolve_precision(precision)
    loaded, tokenizer = load_model(model, prec, frozen=True)
    settings = {"limit": limit, "shots": shots, "seed": seed, "batch_size": batch_size}
    settings |= {"precision": prec, "compile": compile}

    def evaluate(m, predictions_dir) -> dict[str, Any]:
        results = evaluate_tasks(m, tokenizer, specs, predictions_dir=predictions_dir, **settings)
        return {r.task: asdict(r) for r in results}

    if len(adapters) > 1:
        payload = {"model": model, "adapters": {}, "rows": []}
        previous = None
        for i, (label, path) in enumerate(zip(adapter_labels(adapters), adapters, strict=True)):
            loaded = load_adapter(loaded, path, name=f"adapter_{i}")
            if previous is not None:
                unload_adapter(loaded, previous)  # one adapter's weights held at a time
            previous = f"adapter_{i}"
            scores = evaluate(loaded, Path(out_dir) / label)
            payload["adapters"][label] = {"adapter": str(path), "tasks": scores}
            payload["rows"] += [{"adapter": label, **row} for row in scores.values()]
    else:
        if adapters:
            loaded = load_adapter(loaded, adapters[0])
        adapter = str(adapters[0]) if adapters else None
        payload = {"model": model, "adapter": adapter, "tasks": evaluate(loaded, out_dir)}
    if json_path is not None:
        atomic_write_text(Path(json_path), json.dumps(payload, indent=2))
    return payload
