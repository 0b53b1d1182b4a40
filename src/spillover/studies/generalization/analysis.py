"""The generalization study's analysis (methods.md §2): label every cell, then the generalization table,
per-cell detail, FTICL vs FT, the training-size curves and the paired comparisons of every cell
(`tables/comparisons.csv`: FT vs base, FTICL vs base, FTICL vs FT, and ICL = the base model with k shots vs
0 shots; each on the same test rows, q: Benjamini–Hochberg over the table)."""

from __future__ import annotations

from collections import defaultdict

import pandas as pd

from spillover.analysis import generalization as g
from spillover.analysis.paired import comparisons_table
from spillover.engine.plan import Job
from spillover.studies.contract import BASE, Analysis, Results, mean_over_seeds
from spillover.studies.evidence import compare_jobs, comparison_row
from spillover.studies.generalization.plan import GeneralizationAnalyseJob, model_label

_CELL_KEYS = ("source", "method", "size", "target", "shots")


def gather_cells(results: Results) -> pd.DataFrame:
    """One row per finished eval job: its (source, method, size, target, shots) and its score."""
    evals = {j.id: j for j in results.finished("eval")}
    scores = results.scores_of(list(evals.values()))
    own = [
        results.tasks[t].metric for t in scores["target"]
    ]  # the task's own metric (not macro_f1 beside it)
    scores = scores[scores["metric"] == pd.Series(own, index=scores.index, dtype=object)]
    rows = [
        {
            **{k: getattr(evals[s["job_id"]].params, k) for k in _CELL_KEYS},
            **{k: s[k] for k in ("metric", "value", "n", "ci_low", "ci_high")},
            "_replica": results.replica(s["job_id"]),
        }
        for s in scores.to_dict("records")
    ]
    cols = [*_CELL_KEYS, "metric", "value", "n", "ci_low", "ci_high"]
    frame = mean_over_seeds(pd.DataFrame(rows, columns=[*cols, "_replica"]), ["_replica"])
    return frame.reindex(columns=cols).astype({"size": "Int64"})


def analyse(results: Results, p: GeneralizationAnalyseJob) -> Analysis:
    """Runs over whatever evaluations finished (missing cells are simply absent from the means)."""
    types = {name: task.task_type for name, task in results.tasks.items()}
    domains = {name: task.domain for name, task in results.tasks.items()}
    cells = g.label_cells(gather_cells(results), p.sources, types, domains)
    tables = {
        "generalization": g.generalization_table(cells, p.main_size),
        "generalization_delta": g.generalization_table(cells, p.main_size, value="delta"),
        "cells": g.cell_detail(cells),
        "fticl_vs_ft": g.fticl_comparison(cells),
        "size_curves": g.size_curves(cells),
        "settings": settings_table(p.sources, p.targets, results.tasks),
        "comparisons": comparisons(results),
    }
    return Analysis(tables, footer=f"{len(cells)} evaluations", extra=p)


def settings_table(sources: dict[str, str], targets: list[str], tasks) -> pd.DataFrame:
    """How each (source, target) cell is labelled, with the task types and domains behind the label."""
    types = {name: task.task_type for name, task in tasks.items()}
    domains = {name: task.domain for name, task in tasks.items()}
    rows = [
        {
            "source": s,
            "trained_on": task,
            "target": t,
            "setting": g.cell_setting(task, t, types, domains),
            "source_type": types[task],
            "target_type": types[t],
            "source_domain": tasks[task].domain,
            "target_domain": tasks[t].domain,
        }
        for s, task in sources.items()
        for t in targets
    ]
    return pd.DataFrame(rows)


Cell = tuple  # (source, method, size, target, shots); source/method/size None for the base model


def cell_jobs(results: Results) -> dict[Cell, list[Job]]:
    """The finished evaluation jobs of every cell (one per training seed when a study has several)."""
    cells: dict[Cell, list[Job]] = defaultdict(list)
    for j in results.finished("eval"):
        cells[tuple(getattr(j.params, k) for k in _CELL_KEYS)].append(j)
    return cells


def cell_label(cell: Cell) -> str:
    """'toy_a · FT · n=16 · 1-shot', 'base · 0-shot'."""
    source, method, size, _, shots = cell
    model = BASE if source is None else model_label(source, method, size)
    return f"{model} · {shots}-shot"


def comparison_pairs(cells: dict[Cell, list[Job]]) -> list[tuple[Cell, Cell]]:
    """(a, b) cell pairs compared: FT / FTICL vs the base with the same shots on the same target, FTICL vs
    FT of the same source and size, and the base with k shots vs the base with 0 shots (ICL)."""
    pairs = []
    for cell in cells:
        source, method, size, target, shots = cell
        if source is None:
            pairs.append((cell, (None, None, None, target, 0)) if shots else None)
            continue
        pairs.append((cell, (None, None, None, target, shots)))
        if method == "fticl":
            pairs.append((cell, (source, "ft", size, target, shots)))
    return [(a, b) for a, b in filter(None, pairs) if b in cells]


def comparisons(results: Results) -> pd.DataFrame:
    """`tables/comparisons.csv` (a, b, target, metric, diff, ci_low, ci_high, p, q, significant, n, seeds):
    every pair of `comparison_pairs`, paired on the rows both sides scored under the target's metric."""
    cells = cell_jobs(results)
    rows = [
        comparison_row(
            cell_label(a),
            cell_label(b),
            a[3],
            results.tasks[a[3]].metric,
            compare_jobs(results, cells[a], cells[b]),
        )
        for a, b in comparison_pairs(cells)
    ]
    return comparisons_table(rows)
