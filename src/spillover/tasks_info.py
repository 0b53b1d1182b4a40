"""What `spillover tasks` shows: a table of tasks, and one task's spec with a rendered example."""

from __future__ import annotations

from pathlib import Path

import yaml

from spillover.data.prompts import render_training
from spillover.data.sources import read_rows
from spillover.data.tasks import builtin_tasks, load_examples, load_task_file, resolve_tasks


def task_table(tasks_file: str | Path | None = None) -> list[dict]:
    tasks = builtin_tasks()
    if tasks_file is not None:
        tasks.update(load_task_file(tasks_file))
    rows = []
    for t in tasks.values():
        sizes = {s: _count(t, s) for s in ("train", "test")}
        rows.append(
            {
                "name": t.name,
                "type": t.type,
                "task_type": t.task_type or "-",
                **sizes,
                "metric": t.metric,
                "license": _short(t.license),
            }
        )
    return rows


def _count(task, split: str) -> str:
    source = task.train if split == "train" else task.test
    if source is None:
        return "-"
    if source.startswith("hf:"):
        return "hub"
    return str(len(read_rows(source, task.base_dir, split)))


def _short(text: str | None, n: int = 40) -> str:
    text = (text or "-").replace("\n", " ")
    return text if len(text) <= n else text[: n - 1] + "…"


def describe_task(name: str, tasks_file: str | Path | None = None, model: str | None = None) -> str:
    """The task's spec as YAML, then its first test example rendered as (context, target)."""
    (task,) = resolve_tasks([name], tasks_file)
    spec = yaml.safe_dump(task.model_dump(exclude_none=True, exclude_defaults=False), sort_keys=False)
    example = load_examples(task, "test", limit=1)[0]
    tokenizer = _tokenizer(model)
    if tokenizer is None:
        context, target = (
            (f"{task.instruction}\n\n" if task.instruction else "") + example.text,
            example.target,
        )
        note = "(raw view; pass --model NAME to render through that model's chat template)"
    else:
        context, target = render_training(task, tokenizer, example)
        note = f"(rendered for {model})"
    options = f"\noptions: {list(example.options)}  gold: {example.gold}" if example.options else ""
    return f"{spec}\n--- example {example.id} {note}\n[prompt]\n{context}\n[target]\n{target}{options}"


def _tokenizer(model: str | None):
    if model is None:
        return None
    from spillover.models.load import load_tokenizer

    return load_tokenizer(model)
