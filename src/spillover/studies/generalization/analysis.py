"""The generalization study's analysis (methods.md §2): label every cell, then the generalization table,
per-cell detail, FTICL vs FT and the training-size curves."""

from __future__ import annotations

import pandas as pd

from spillover.analysis import generalization as g
from spillover.studies.contract import Analysis, Results
from spillover.studies.generalization.plan import GeneralizationAnalyseJob

_CELL_KEYS = ("source", "method", "size", "target", "shots")


def gather_cells(results: Results) -> pd.DataFrame:
    """One row per finished eval job: its (source, method, size, target, shots) and its score."""
    evals = {j.id: j for j in results.finished("eval")}
    scores = results.scores_of(list(evals.values()))
    rows = [
        {
            **{k: getattr(evals[s["job_id"]].params, k) for k in _CELL_KEYS},
            **{k: s[k] for k in ("metric", "value", "n", "ci_low", "ci_high")},
        }
        for s in scores.to_dict("records")
    ]
    cols = [*_CELL_KEYS, "metric", "value", "n", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=cols).astype({"size": "Int64"})


def analyse(results: Results, p: GeneralizationAnalyseJob) -> Analysis:
    """Runs over whatever evaluations finished (missing cells are simply absent from the means)."""
    types = {name: task.task_type for name, task in results.tasks.items()}
    cells = g.label_cells(gather_cells(results), p.sources, types)
    tables = {
        "generalization": g.generalization_table(cells, p.main_size),
        "generalization_delta": g.generalization_table(cells, p.main_size, value="delta"),
        "cells": g.cell_detail(cells),
        "fticl_vs_ft": g.fticl_comparison(cells),
        "size_curves": g.size_curves(cells),
        "settings": settings_table(p.sources, p.targets, results.tasks),
    }
    return Analysis(tables, footer=f"{len(cells)} evaluations", extra=p)


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
