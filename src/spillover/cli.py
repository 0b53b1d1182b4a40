"""The `spillover` command line: load YAML -> validate -> call the library. Printing happens only here."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from spillover import __version__
from spillover.errors import SpilloverError

log = logging.getLogger("spillover")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries()
    try:
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

    tr = sub.add_parser("train", help="fine-tune a model (LoRA or full) on one or more tasks")
    tr.add_argument("config", help="training config YAML (see configs/sst2-lora.yaml)")
    tr.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys, e.g. learning_rate=1e-4 lora.r=16")
    tr.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    tr.set_defaults(func=_cmd_train)

    ev = sub.add_parser("eval", help="evaluate a model (and optionally a LoRA adapter) on tasks")
    ev.add_argument("--model", default="embedded", help="'embedded', a Hugging Face id, or a local folder")
    ev.add_argument("--adapter", default=None, help="a PEFT adapter folder to apply to the model")
    ev.add_argument("--tasks", required=True, help="comma-separated task names")
    ev.add_argument("--tasks-file", default=None, help="YAML file with a `tasks:` list of your own tasks")
    ev.add_argument("--limit", type=_positive_int, default=None, help="first N test examples per task")
    ev.add_argument("--shots", type=_nonnegative_int, default=0, help="in-context demonstrations from the train split")
    ev.add_argument("--seed", type=int, default=0, help="seed for demonstration sampling")
    ev.add_argument("--batch-size", type=_positive_int, default=16)
    ev.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    ev.add_argument("--out", default=None, help="folder for per-example predictions (default: a temp-free ./eval-out)")
    ev.add_argument("--json", default=None, help="write the results as JSON to this file")
    ev.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    ev.set_defaults(func=_cmd_eval)

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


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("transformers", "peft", "accelerate", "urllib3", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def _set_threads(n: int | None) -> None:
    import torch

    torch.set_num_threads(n or os.cpu_count() or 1)


def _cmd_train(args: argparse.Namespace) -> int:
    from spillover.config import TrainSpec, load_spec
    from spillover.api import run_training

    spec = load_spec(TrainSpec, args.config, args.overrides)
    _set_threads(args.threads)
    result = run_training(spec, progress=_rich_progress())
    print(f"trained in {result['train']['seconds']:.0f}s, final loss {result['train']['final_loss']:.4f}")
    for row in result.get("eval", []):
        print(_format_result(row))
    print(f"outputs: {spec.output_dir}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from spillover.api import run_evaluation

    _set_threads(args.threads)
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not names:
        raise SpilloverError("--tasks is empty; give comma-separated task names (see `spillover tasks`)")
    results = run_evaluation(
        model=args.model, adapter=args.adapter, tasks=names, tasks_file=args.tasks_file, limit=args.limit,
        shots=args.shots, seed=args.seed, batch_size=args.batch_size, precision=args.precision,
        out_dir=Path(args.out or "eval-out"), json_path=args.json,
    )
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
        table.add_row(*[str(row[c]) for c in ("name", "type", "task_type", "train", "test", "metric", "license")])
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


def _console():
    """A rich console; when piped, wide enough that tables are not squeezed into an 80-column default."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=160)


def _rich_progress():
    """A callback for the training loop that drives a rich progress bar (loss, tokens/s)."""
    from spillover.progress import RichProgress

    return RichProgress()


if __name__ == "__main__":
    sys.exit(main())
