"""The generalization study's `analyse` job: gather scores, label cells, export tables/, write report.html."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from spillover.analysis import generalization as g
from spillover.engine.plan import Job, Plan
from spillover.report import plots
from spillover.report.html import Section, render_report, write_report
from spillover.studies.tables import write_tables

_CELL_KEYS = ("source", "method", "size", "target", "shots")


def gather_cells(store, plan: Plan) -> pd.DataFrame:
    """One row per finished eval job: its (source, method, size, target, shots) and its score."""
    done = {j["id"] for j in store.jobs() if j["status"] == "done"}
    evals = {j.id: j for j in plan.by_kind("eval") if j.id in done}
    rows = [
        {
            **{k: evals[s["job_id"]].params[k] for k in _CELL_KEYS},
            **{k: s[k] for k in ("metric", "value", "n", "ci_low", "ci_high")},
        }
        for s in store.scores(list(evals))
    ]
    cols = [*_CELL_KEYS, "metric", "value", "n", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=cols).astype({"size": "Int64"})


def analyse_job(ctx, plan: Plan, job: Job) -> dict[str, Any]:
    """Runs over whatever evaluations finished (missing cells are simply absent from the means)."""
    p = job.params
    types = {name: task.task_type for name, task in ctx.tasks.items()}
    cells = g.label_cells(gather_cells(ctx.store, plan), p["sources"], types)
    tables = {
        "generalization": g.generalization_table(cells, p["main_size"]),
        "generalization_delta": g.generalization_table(cells, p["main_size"], value="delta"),
        "cells": g.cell_detail(cells),
        "fticl_vs_ft": g.fticl_comparison(cells),
        "size_curves": g.size_curves(cells),
        "settings": settings_table(p["sources"], p["targets"], ctx.tasks),
    }
    out = Path(ctx.spec.output_dir)
    names = write_tables(tables, out / "tables")
    html = render_report(
        f"Generalization study: {ctx.spec.model}",
        sections(tables, p),
        ctx.spec.model_dump(mode="json"),
        footer=f"{len(cells)} evaluations",
    )
    write_report(out / "report.html", html)
    return {"tables": names, "report": str(out / "report.html")}


def settings_table(sources: dict[str, str], targets: list[str], tasks) -> pd.DataFrame:
    """How each (source, target) cell is labelled, with the task types and domains behind the label."""
    types = {name: task.task_type for name, task in tasks.items()}
    rows = [
        {
            "source": s,
            "trained_on": task,
            "target": t,
            "setting": g.cell_setting(task, t, types),
            "source_type": types[task],
            "target_type": types[t],
            "target_domain": tasks[t].domain,
        }
        for s, task in sources.items()
        for t in targets
    ]
    return pd.DataFrame(rows)


def sections(t: dict[str, pd.DataFrame], p: dict[str, Any]) -> list[Section]:
    size = p["main_size"] if p["main_size"] is not None else "all"
    labels = t["settings"].pivot(index="source", columns="target", values="setting")
    return [
        Section(
            "table",
            "Generalization table",
            _TABLE_INTRO.format(size=size),
            figures=[
                plots.heatmap(
                    t["generalization_delta"] * 100,
                    f"Mean Δ vs base (points), n={size}",
                    diverging=True,
                    fmt="+.1f",
                    x_title="setting",
                    y_title="fine-tuned on",
                    value_label="Δ (points)",
                ),
            ],
            tables=[
                (
                    "Mean score per setting (base row: the untuned model on the same cells)",
                    t["generalization"],
                ),
                ("Mean Δ = score − base", t["generalization_delta"]),
                ("Cell labels", labels),
            ],
        ),
        Section(
            "cells",
            "Per-cell detail",
            _CELLS_INTRO,
            figures=_cell_heatmaps(t["cells"], p),
            tables=[("Every cell", t["cells"])],
        ),
        Section(
            "fticl",
            "FTICL vs FT",
            _FTICL_INTRO,
            figures=_fticl_bars(t["fticl_vs_ft"]),
            tables=[("FT and FTICL per source, size, shots and setting", t["fticl_vs_ft"])],
        ),
        Section(
            "sizes",
            "Training size",
            _SIZE_INTRO,
            columns=2,
            figures=_size_lines(t["size_curves"], p),
            tables=[("Score and Δ vs training size", t["size_curves"])],
        ),
    ]


def _cell_heatmaps(cells: pd.DataFrame, p: dict[str, Any]) -> list:
    main = cells[g.at_size(cells["size"], p["main_size"])]
    figs = []
    for k in p["shots"]:
        part = main[main["shots"] == k]
        if part.empty:
            continue
        delta = part.assign(
            model=[f"{s} · {m.upper()}" for s, m in zip(part["source"], part["method"], strict=True)]
        ).pivot(index="model", columns="target", values="delta")
        figs.append(
            plots.heatmap(
                delta.reindex(columns=p["targets"]) * 100,
                f"Δ vs base, {k}-shot (points)",
                diverging=True,
                fmt="+.1f",
                x_title="target",
                y_title="fine-tuned on",
                value_label="Δ (points)",
            )
        )
    return figs


def _fticl_bars(frame: pd.DataFrame) -> list:
    if "fticl_minus_ft" not in frame or frame["fticl_minus_ft"].isna().all():
        return []
    rows = frame.assign(
        cell=[f"{k}-shot {s}" for k, s in zip(frame["shots"], frame["setting"], strict=True)],
        gain=frame["fticl_minus_ft"] * 100,
    )
    mean = rows.groupby(["cell", "source"], sort=False)["gain"].mean().reset_index()
    return [plots.bars(mean, "cell", "gain", color="source", title="FTICL − FT (points), mean over sizes")]


def _size_lines(curves: pd.DataFrame, p: dict[str, Any]) -> list:
    if curves["size"].nunique() < 2:
        return []
    figs = []
    for k in p["shots"]:
        part = curves[curves["shots"] == k]
        part = part.assign(
            line=[
                f"{s} · {m.upper()} · {st}"
                for s, m, st in zip(part["source"], part["method"], part["setting"], strict=True)
            ]
        )
        figs.append(
            plots.lines(
                part.astype({"size": float}),
                "size",
                "score",
                color="line",
                title=f"Score vs training size, {k}-shot",
            )
        )
    return figs


_TABLE_INTRO = """Each model was fine-tuned on one source dataset and evaluated on every target. A cell is \
in-domain when the target is the training dataset itself, out-of-domain when it is another dataset of the \
same task type, and cross-task otherwise. Columns average the scores of a setting (0-shot and k-shot with \
demonstrations from the target's train split), at training size {size}. FTICL rows were fine-tuned with \
demonstrations in every training prompt."""
_CELLS_INTRO = """Δ per target against the base model with the same number of demonstrations. Scores carry \
bootstrap 95% intervals in the table."""
_FTICL_INTRO = """Positive bars: fine-tuning with in-context demonstrations generalises better than plain \
fine-tuning in that setting."""
_SIZE_INTRO = """Mean score per setting as the training set grows (nested subsets: the first N rows)."""
