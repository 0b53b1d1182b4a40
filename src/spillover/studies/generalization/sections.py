"""The generalization study's report sections: the table, per-cell detail, FTICL vs FT, training size."""

from __future__ import annotations

import pandas as pd

from spillover.analysis import generalization as g
from spillover.report import plots
from spillover.report.html import Section
from spillover.studies.contract import BASE, Analysis, Results
from spillover.studies.evidence import comparisons_section
from spillover.studies.generalization.plan import GeneralizationAnalyseJob, model_label


def sections(a: Analysis, results: Results) -> list[Section]:
    return generalization_sections(a.tables, a.extra)


def generalization_sections(t: dict[str, pd.DataFrame], p: GeneralizationAnalyseJob) -> list[Section]:
    size = p.main_size if p.main_size is not None else "all"
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
            figures=_cell_heatmaps(t["cells"], p, t["comparisons"]),
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
        comparisons_section(t["comparisons"], _COMPARISONS_INTRO, "cell comparisons"),
    ]


def _vs_base_marks(paired: pd.DataFrame, rows: pd.Index, p: GeneralizationAnalyseJob, k: int) -> pd.DataFrame:
    """rows ('source · METHOD') × targets: is the cell's paired test against the base significant?"""
    labels = {
        f"{model_label(s, m, p.main_size)} · {k}-shot": f"{s} · {m.upper()}"
        for s in p.sources
        for m in p.methods
    }
    part = paired[(paired["b"] == f"{BASE} · {k}-shot") & paired["a"].isin(labels)]
    marks = part.assign(model=part["a"].map(labels)).pivot(
        index="model", columns="target", values="significant"
    )
    return marks.reindex(index=rows, columns=p.targets)


def _cell_heatmaps(cells: pd.DataFrame, p: GeneralizationAnalyseJob, paired: pd.DataFrame) -> list:
    main = cells[g.at_size(cells["size"], p.main_size)]
    figs = []
    for k in p.shots:
        part = main[main["shots"] == k]
        if part.empty:
            continue
        delta = part.assign(
            model=[f"{s} · {m.upper()}" for s, m in zip(part["source"], part["method"], strict=True)]
        ).pivot(index="model", columns="target", values="delta")
        figs.append(
            plots.heatmap(
                delta.reindex(columns=p.targets) * 100,
                f"Δ vs base, {k}-shot (points; * = significant, BH q < 0.05; faded = not)",
                diverging=True,
                fmt="+.1f",
                x_title="target",
                y_title="fine-tuned on",
                value_label="Δ (points)",
                significant=_vs_base_marks(paired, delta.index, p, k),
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


def _size_lines(curves: pd.DataFrame, p: GeneralizationAnalyseJob) -> list:
    if curves["size"].nunique() < 2:
        return []
    figs = []
    for k in p.shots:
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
in-domain when the target has the training dataset's task type and domain (the dataset itself included), \
out-of-domain when it has the same task type in another domain, and cross-task otherwise. Columns average \
the scores of a setting (0-shot and k-shot with demonstrations from the target's train split), at training \
size {size}. FTICL rows were fine-tuned with \
demonstrations in every training prompt."""
_CELLS_INTRO = """Δ per target against the base model with the same number of demonstrations. Scores carry \
bootstrap 95% intervals in the table; a "*" marks a Δ whose paired test against the base is significant \
(Benjamini–Hochberg q < 0.05 over the comparisons table), the other cells are faded."""
_FTICL_INTRO = """Positive bars: fine-tuning with in-context demonstrations generalises better than plain \
fine-tuning in that setting."""
_SIZE_INTRO = """Mean score per setting as the training set grows (nested subsets: the first N rows)."""
_COMPARISONS_INTRO = """Every cell against its reference on the same test rows and shot count: FT and \
FTICL vs the base model, FTICL vs FT (same source and training size), and in-context learning alone (the \
base model with k demonstrations vs 0). Rows name the model, its training size and the number of shots."""
