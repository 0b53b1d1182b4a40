"""The `spillover` command line: load YAML -> validate -> call the library. Printing happens only here."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from spillover import __version__
from spillover.errors import SpilloverError

# analysis.prediction.METHODS, spelled out so building the parser imports no pandas (a test checks they match)
PREDICTION_METHODS = ("stats", "gradient", "probe", "combined", "semantic", "task_type", "mean_row")

log = logging.getLogger("spillover")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = int(os.environ.get("RANK", "0")) > 0  # the other processes of a data-parallel launch
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    _quiet_libraries()
    try:
        if args.command != "train":  # only one training job can run as several processes (docs/scaling.md)
            from spillover.training.distributed import refuse_launch

            refuse_launch(f"spillover {args.command}")
        return args.func(args) or 0
    except SpilloverError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spillover",
        description="Fine-tune language models and measure what happens to every other task.",
    )
    p.add_argument("--version", action="version", version=f"spillover {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    rn = sub.add_parser("run", help="run a study: plan, train, evaluate, analyse, write report.html")
    from spillover.studies import STUDIES

    rn.add_argument(
        "study", help=f"study YAML; `study:` is one of {', '.join(STUDIES)} (examples in studies/)"
    )
    rn.add_argument(
        "overrides", nargs="*", metavar="key=value", help="override study keys, e.g. eval.limit=50"
    )
    rn.add_argument("--out", default=None, help="output folder (default: the study's output_dir)")
    rn.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: all cores); with --executor ray only for the analysis, which runs "
        "in this process (jobs on Ray workers use --cpus-per-job threads)",
    )
    from spillover.engine.executors import EXECUTORS

    rn.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local: every job in this process, one after another (default); ray: independent jobs in "
        "parallel on Ray workers, the analysis here (see docs/scaling.md)",
    )
    rn.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="with --executor ray: the Ray cluster to join (host:port, auto, or ray://host:port); "
        "default: join RAY_ADDRESS or this machine's `ray start` instance, else start a local one",
    )
    rn.add_argument(
        "--cpus-per-job",
        type=_positive_int,
        default=None,
        metavar="N",
        help="with --executor ray: CPUs each job reserves and its torch threads (default 1)",
    )
    rn.add_argument(
        "--gpus-per-job",
        type=_nonnegative_float,
        default=None,
        metavar="G",
        help="with --executor ray: GPUs each job reserves; a fraction shares a GPU (default 0)",
    )
    rn.set_defaults(func=_cmd_run)

    st = sub.add_parser("status", help="show a study's jobs: done / failed / pending")
    st.add_argument("dir", help="the study's output folder")
    st.set_defaults(func=_cmd_status)

    rp = sub.add_parser(
        "report",
        help="re-render a study's report.html and tables/ from its results (or a `spillover train` folder's "
        "report.html, with eval_every)",
    )
    rp.add_argument("dir", help="the study's (or training run's) output folder")
    rp.set_defaults(func=_cmd_report)

    tr = sub.add_parser(
        "train",
        help="fine-tune a model (LoRA or full) on one or more tasks",
        description="Fine-tune a model (LoRA or full) on one or more tasks; the config's keys are in "
        "docs/training.md. With `eval_every: N`, every eval task (eval_tasks; default: the training tasks) is "
        "probed at step 0, every N steps and the last (score + validation loss on its first eval_limit test "
        "rows): OUTPUT_DIR/eval_curves.csv, OUTPUT_DIR/report.html, and report_to's TensorBoard / MLflow.",
    )
    tr.add_argument("config", help="training config YAML (see configs/sst2-lora.yaml)")
    tr.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="override config keys, e.g. learning_rate=1e-4 lora.r=16",
    )
    tr.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    tr.set_defaults(func=_cmd_train)

    ev = sub.add_parser("eval", help="evaluate a model (and optionally a LoRA adapter) on tasks")
    ev.add_argument("--model", default="embedded", help="'embedded', a Hugging Face id, or a local folder")
    ev.add_argument(
        "--adapter",
        default=None,
        help="a PEFT adapter folder to apply to the model; several, comma-separated (a,b,c): the base is "
        "loaded once and each adapter evaluated on every task in turn (predictions in OUT/<path tail>/)",
    )
    ev.add_argument(
        "--tasks",
        required=True,
        help="comma-separated task names; lm_eval:TASK is an lm-evaluation-harness task, prompted and scored "
        "by lm-eval (pip install 'spillover[lm-eval]'; docs/evaluation.md)",
    )
    ev.add_argument("--tasks-file", default=None, help="YAML file with a `tasks:` list of your own tasks")
    ev.add_argument(
        "--lm-eval-include",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder of lm-eval task YAMLs searched for lm_eval:TASK before lm-eval's own tasks (repeatable)",
    )
    ev.add_argument("--limit", type=_positive_int, default=None, help="first N test examples per task")
    ev.add_argument(
        "--shots",
        type=_nonnegative_int,
        default=0,
        help="in-context demonstrations from the train split; for lm_eval:TASK, lm-eval's --num_fewshot "
        "(0 keeps the task's own)",
    )
    ev.add_argument("--seed", type=int, default=0, help="seed for demonstration sampling")
    ev.add_argument(
        "--batch-size",
        type=_positive_int,
        default=16,
        help="prompts per generation batch; log-likelihood scoring takes more rows while they are short "
        "(up to batch-size x 128 padded tokens, at most 8 x batch-size rows) (default: 16)",
    )
    ev.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    ev.add_argument(
        "--compile",
        choices=["auto", "on", "off"],
        default="auto",  # models.compile.COMPILE_CHOICES
        help="torch.compile the forward passes of log-likelihood scoring: on compiles, auto and off score "
        "eagerly (docs/evaluation.md) (default: auto)",
    )
    ev.add_argument(
        "--out", default=None, help="folder for per-example predictions (default: a temp-free ./eval-out)"
    )
    ev.add_argument("--json", default=None, help="write the results as JSON to this file")
    ev.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    ev.set_defaults(func=_cmd_eval)

    pr = sub.add_parser(
        "predict",
        help="predict a new source's transfer row from a finished transfer study, without fine-tuning on it",
        description="Predict Δ(new source → each target) of a finished transfer study from dataset statistics "
        "and gradient alignment at the base model (docs/prediction.md), or check the methods by "
        "leave-one-source-out over the study (--evaluate).",
    )
    pr.add_argument("dir", help="the finished transfer study's folder")
    pr.add_argument(
        "--source",
        default=None,
        help="the new source: a task name (built-in or in the study's tasks_file); writes "
        "DIR/prediction/<source>/predicted_delta.csv (source,target,predicted_delta,low,high)",
    )
    pr.add_argument(
        "--evaluate",
        action="store_true",
        help="leave-one-source-out over the study's measured sources: DIR/tables/prediction_eval.csv",
    )
    pr.add_argument(
        "--method",
        choices=list(PREDICTION_METHODS),
        default="combined",
        help="with --source: which predictor writes the row (default: combined)",
    )
    pr.add_argument(
        "--grad-examples",
        type=_nonnegative_int,
        default=32,
        help="training rows per task for the mean LoRA gradient; 0 leaves the gradient signal out (default: 32)",
    )
    pr.add_argument(
        "--probe-fraction",
        type=_nonnegative_float,
        default=0.05,
        help="the short probe's share of the source's fine-tune (optimiser steps, at least one); 0 leaves the "
        "probe signal out (default: 0.05)",
    )
    pr.add_argument("--out", default=None, help="with --source: folder for predicted_delta.csv and cost.json")
    pr.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    pr.set_defaults(func=_cmd_predict)

    ts = sub.add_parser("tasks", help="list tasks, or `tasks show NAME` for one task's spec and an example")
    ts.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    ts.add_argument("name", nargs="?", help="task name (with `show`)")
    ts.add_argument("--tasks-file", default=None, help="also list the tasks of this file")
    ts.add_argument("--model", default=None, help="render the example through this model's chat template")
    ts.set_defaults(func=_cmd_tasks)

    md = sub.add_parser("models", help="show the embedded model and cached checkpoints")
    md.set_defaults(func=_cmd_models)
    return p


def _positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s}")
    return v


def _nonnegative_int(s: str) -> int:
    v = int(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {s}")
    return v


def _nonnegative_float(s: str) -> float:
    v = float(s)
    if not v >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {s}")
    return v


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("transformers", "peft", "accelerate", "urllib3", "httpx", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def _set_threads(n: int | None) -> None:
    import torch

    from spillover.training.distributed import threads_per_process

    torch.set_num_threads(n or threads_per_process())  # all cores, shared by the processes of a launch


def _cmd_run(args: argparse.Namespace) -> int:
    from spillover.studies.run import load_study, run_study

    kind, spec = load_study(args.study, args.overrides, args.out)
    ray = _ray_options(args)
    _set_threads(args.threads)
    from spillover.progress import StudyProgress

    bar = StudyProgress(sys.stderr)  # the study's bar + the running job's; plain lines when piped
    try:
        summary, out = run_study(
            kind,
            spec,
            progress=bar.step,
            on_job=bar.job,
            on_start=bar.start,
            executor=args.executor,
            ray=ray,
        )
    finally:
        bar.close()
    print(
        f"{len(summary.done)} jobs run, {len(summary.skipped)} already done, "
        f"{len(summary.failed)} failed, {len(summary.blocked)} blocked"
    )
    report = out / "report.html"
    if report.exists():
        print(f"report: {report}")
    for job_id, err in summary.failed.items():
        print(f"failed: {job_id}: {err.splitlines()[0] if err else ''}  (details: spillover status {out})")
    return 0 if summary.ok else 1


def _ray_options(args: argparse.Namespace):
    """The validated --executor ray options; an error when one is given with another executor."""
    given = {
        k: getattr(args, k)
        for k in ("address", "cpus_per_job", "gpus_per_job")
        if getattr(args, k) is not None
    }
    if args.executor != "ray":
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise SpilloverError(f"{flags}: only with --executor ray (the executor is {args.executor})")
        return None
    from spillover.engine.ray_executor import RayOptions
    from spillover.yamlio import validate

    return validate(RayOptions, given, "--executor ray")


def _cmd_status(args: argparse.Namespace) -> int:
    from rich.table import Table

    from spillover.studies.run import study_status

    rows = study_status(args.dir)
    table = Table(title=f"study {args.dir}")
    for col in ("status", "kind", "name", "seconds", "id", "error"):
        table.add_column(col, overflow="fold")
    colour = {"done": "green", "failed": "red", "running": "yellow", "pending": "white"}
    for r in rows:
        err = (r["error"] or "").strip().splitlines()
        table.add_row(
            f"[{colour[r['status']]}]{r['status']}[/]",
            r["kind"],
            r["name"],
            f"{r['seconds']:.0f}" if r["seconds"] is not None else "",
            r["id"],
            err[-1] if err else "",
        )
    _console().print(table)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "failed", "running", "pending")}
    print(
        ", ".join(f"{v} {k}" for k, v in counts.items())
        + ("  (running = interrupted; re-run to resume)" if counts["running"] else "")
    )
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from spillover.studies.run import rerender_report

    path = rerender_report(args.dir)
    print(f"report: {path}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from spillover.studies.transfer import predict

    if args.evaluate == (args.source is not None):
        raise SpilloverError("spillover predict: give either --source TASK or --evaluate (one of them)")
    _set_threads(args.threads)
    if args.evaluate:
        path = predict.evaluate(args.dir, args.grad_examples or None, args.probe_fraction or None)
        print(_table_text(path))
        print(f"leave-one-source-out: {path}")
        return 0
    from spillover.studies.specs import SourceSpec

    path = predict.predict(
        args.dir,
        SourceSpec(task=args.source),
        args.out,
        args.method,
        args.grad_examples or None,
        args.probe_fraction or None,
    )
    print(_table_text(path))
    print(f"predicted row: {path}")
    return 0


def _table_text(path: Path) -> str:
    import pandas as pd

    return pd.read_csv(path).to_string(index=False, float_format=lambda v: f"{v:.3f}")


def _cmd_train(args: argparse.Namespace) -> int:
    from spillover.api import run_training
    from spillover.config import TrainSpec, load_spec
    from spillover.training.distributed import current, leave

    spec = load_spec(TrainSpec, args.config, args.overrides)
    _set_threads(args.threads)
    try:
        result = run_training(spec, progress=_rich_progress())
        is_main = current().is_main
    finally:
        leave()
    if not is_main:
        return 0  # a data-parallel launch (docs/scaling.md): rank 0 evaluates and prints the summary
    print(f"trained in {result['train']['seconds']:.0f}s, final loss {result['train']['final_loss']:.4f}")
    for m in result.get("mixture", []):
        print(
            f"  {m['task']}: ratio {m['mean_ratio']:.3f}, drew {m['sequences']} sequences "
            f"({m['realised_fraction']:.3f}), {m['epochs']:.2f} epochs"
        )
    for row in result.get("eval", []):
        print(_format_result(row))
    if "report" in result:
        print(f"evaluation curves: {result['eval_curves']}; report: {result['report']}")
    print(f"outputs: {spec.output_dir}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from spillover.api import run_evaluation
    from spillover.models.compile import COMPILE_CHOICES

    _set_threads(args.threads)
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not names:
        raise SpilloverError("--tasks is empty; give comma-separated task names (see `spillover tasks`)")
    adapters = [a.strip() for a in (args.adapter or "").split(",") if a.strip()]
    results = run_evaluation(
        model=args.model,
        adapter=adapters,
        tasks=names,
        tasks_file=args.tasks_file,
        lm_eval_include=args.lm_eval_include,
        limit=args.limit,
        shots=args.shots,
        seed=args.seed,
        batch_size=args.batch_size,
        precision=args.precision,
        compile=COMPILE_CHOICES[args.compile],
        out_dir=Path(args.out or "eval-out"),
        json_path=args.json,
    )
    if "rows" in results:  # several adapters: one table, one row per adapter and task
        width = max(len(label) for label in results["adapters"])
        for row in results["rows"]:
            print(f"{row['adapter']:<{width}}  {_format_result(row)}")
        return 0
    for row in results["tasks"].values():
        print(_format_result(row))
    return 0


def _format_result(row: dict) -> str:
    return (
        f"{row['task']:<18} {row['metric']:<12} {row['value']:.4f}  "
        f"95% CI [{row['ci_low']:.4f}, {row['ci_high']:.4f}]  n={row['n']}  -> {row.get('predictions_path')}"
    )


def _cmd_tasks(args: argparse.Namespace) -> int:
    from spillover.tasks_info import describe_task, task_table

    if args.action == "show":
        if not args.name:
            raise SpilloverError("`spillover tasks show` needs a task name (see `spillover tasks`)")
        print(describe_task(args.name, args.tasks_file, args.model))
        return 0
    from rich.table import Table

    table = Table(title="tasks")
    for col in ("name", "type", "task_type", "train", "test", "metric"):
        table.add_column(col, no_wrap=True)
    table.add_column("licence", overflow="ellipsis", no_wrap=True, max_width=40)
    for row in task_table(args.tasks_file):
        table.add_row(
            *[str(row[c]) for c in ("name", "type", "task_type", "train", "test", "metric", "license")]
        )
    _console().print(table)
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from rich.table import Table

    from spillover.models.load import list_models

    table = Table(title="models")
    for col in ("name", "source", "cached"):
        table.add_column(col, overflow="fold")
    for row in list_models():
        table.add_row(row["name"], row["source"], row["cached"])
    _console().print(table)
    return 0


def _console(stream=None):
    """A rich console; when piped, wide enough that tables are not squeezed into an 80-column default."""
    from rich.console import Console

    stream = stream or sys.stdout
    return Console(file=stream) if stream.isatty() else Console(file=stream, width=160)


def _rich_progress():
    """A callback for the training loop that drives a rich progress bar (loss, tokens/s)."""
    from spillover.progress import RichProgress

    return RichProgress()


if __name__ == "__main__":
    sys.exit(main())
