"""The transfer study's report sections: the matrix, latent traits, attribution, behaviour, controls."""

from __future__ import annotations

import pandas as pd

from spillover.report import plots
from spillover.report.html import Section
from spillover.studies.contract import Analysis, Results
from spillover.studies.evidence import significance_sentence


def sections(a: Analysis, results: Results) -> list[Section]:
    return transfer_sections(a, results.tasks)


def transfer_sections(a: Analysis, tasks) -> list[Section]:
    t = a.tables
    metric = {name: tasks[name].metric for name in t["matrix"].columns if name in tasks}
    labels = a.extra or []
    pcs = list(t["pca_loadings"].columns)
    axis = (f"{pcs[0]}: {labels[0]}", f"{pcs[1]}: {labels[1]}") if len(pcs) > 1 else None
    stats = t["delta_stats"]
    sentence = significance_sentence(stats, "Δ cells")
    sections = [
        Section(
            "matrix",
            "Transfer matrix",
            f"{_MATRIX_INTRO}\n\n{sentence}",
            figures=[
                plots.heatmap(
                    t["matrix"],
                    "Scores M (rows: fine-tuned on; columns: evaluated on)",
                    diverging=False,
                    base_row=t["base"].iloc[0],
                    x_title="target",
                    y_title="fine-tuned on",
                ),
                plots.heatmap(
                    t["delta"] * 100,
                    "Transfer Δ = M − base (points; * = significant, BH q < 0.05; faded = not)",
                    diverging=True,
                    fmt="+.1f",
                    x_title="target",
                    y_title="fine-tuned on",
                    value_label="Δ (points)",
                    significant=_significant(stats),
                ),
            ],
            tables=[
                ("Metric per target", pd.DataFrame({"metric": metric})),
                ("Scores M", t["matrix"]),
                ("Base row b", t["base"]),
                ("Δ", t["delta"]),
                ("Δ with paired 95% CI, p and BH q (delta_stats)", stats),
                ("Relative Δ = Δ / max(b, ε)", t["relative_delta"]),
                ("Asymmetry: Δ(a→b) vs Δ(b→a)", t["asymmetry"]),
            ],
        ),
        Section(
            "traits",
            "Latent traits (PCA of Δ)",
            f"{_PCA_INTRO}\n\n{_null_sentence(t['pca_null'])}",
            columns=2,
            figures=[
                plots.scree(
                    t["pca_variance"]["explained_variance_ratio"], t["pca_variance"]["cumulative"], names=pcs
                ),
                plots.heatmap(
                    t["pca_loadings"].T,
                    "Loadings: which targets move together",
                    diverging=True,
                    fmt=".2f",
                    x_title="target",
                    y_title="component",
                ),
                *(
                    [
                        plots.biplot(
                            t["pca_projections"],
                            t["pca_loadings"],
                            (pcs[0], pcs[1]),
                            labels=_point_labels(t["pca_projections"]),
                            axis_titles=axis,
                        )
                    ]
                    if len(pcs) > 1
                    else []
                ),
            ],
            tables=[
                ("Explained variance", t["pca_variance"]),
                ("Explained variance vs a permutation null (pca_null)", t["pca_null"]),
                ("Component labels", t["pca_labels"]),
                ("Loadings", t["pca_loadings"]),
                ("Adapter projections (ability profiles)", t["pca_projections"]),
            ],
        ),
        Section(
            "attribution",
            "What explains transfer",
            _ATTR_INTRO,
            columns=2,
            figures=_attribution_figures(t),
            notes=a.notes,
            tables=[
                (
                    "Spearman correlation of Δ with each similarity (95% CI resampling sources)",
                    t["attribution"],
                ),
                ("Anomalies: cells far from what similarity predicts", t["anomalies"]),
                ("Output-length shift vs transfer", t["length_shift"]),
            ],
        ),
        Section(
            "behaviour",
            "Model behaviour on each target",
            _BEHAVIOUR_INTRO,
            figures=[
                plots.heatmap(
                    _pivot(t["behaviour"], "mean_length"),
                    "Mean output length",
                    diverging=False,
                    fmt=".1f",
                    x_title="target",
                    y_title="model",
                ),
                plots.heatmap(
                    _pivot(t["behaviour"], "prior_shift"),
                    "Predicted-label prior shift (TV distance from gold)",
                    diverging=False,
                    fmt=".2f",
                    x_title="target",
                    y_title="model",
                ),
            ],
            tables=[
                ("Behaviour statistics", t["behaviour"]),
                (
                    "Generated length (tokens), paired over the same rows: each source vs the base model and "
                    "every two sources (generation targets; BH q over this table)",
                    t["length_stats"],
                ),
            ],
        ),
        Section(
            "controls",
            "Controls",
            _CONTROLS_INTRO,
            tables=[
                ("Controlled sources next to their plain source", t["controls"]),
                (
                    "Each control vs its plain source on every target, paired on the same rows (BH q over "
                    "this table)",
                    t["control_stats"],
                ),
            ],
        ),
        Section(
            "datasets",
            "Dataset statistics",
            "Token lengths use the model's tokenizer.",
            tables=[("Datasets", t["dataset_stats"])],
        ),
    ]
    if "prediction_eval" in t or "predicted_delta" in t:
        sections.append(prediction_section(t))
    return sections


def prediction_section(t: dict[str, pd.DataFrame]) -> Section:
    """What `spillover predict` wrote for this study: its leave-one-source-out check and predicted rows."""
    figures, tables = [], []
    if "prediction_eval" in t:
        check = t["prediction_eval"]
        figures.append(
            plots.bars(check, "method", "spearman", title="Leave one source out: mean Spearman ρ per method")
        )
        tables.append(("Leave-one-source-out check (prediction_eval)", check))
    if "predicted_delta" in t:
        rows = t["predicted_delta"]
        figures.append(
            plots.heatmap(
                rows.pivot(index="source", columns="target", values="predicted_delta") * 100,
                "Predicted Δ of new sources (points; not measured)",
                diverging=True,
                fmt="+.1f",
                x_title="target",
                y_title="predicted source",
                value_label="predicted Δ (points)",
            )
        )
        tables.append(("Predicted rows with their intervals, method and cost (predicted_delta)", rows))
    return Section("prediction", "Predicted transfer (spillover predict)", _PREDICTION_INTRO, figures, tables)


def _significant(stats: pd.DataFrame) -> pd.DataFrame:
    """sources × targets booleans from delta_stats (cells without a row are not significant)."""
    if stats.empty:
        return pd.DataFrame(dtype=bool)
    return stats.pivot(index="source", columns="target", values="significant")


def _null_sentence(null: pd.DataFrame) -> str:
    """Which components explain more variance than the same Δ with each column shuffled."""
    above = [f"{r.component} (p = {r.p:.3g})" for r in null[null["above_null"]].itertuples()]
    if not above:
        return (
            "No component explains more variance than it does in Δ with each column shuffled (95th "
            "percentile of the permutation null): the traits cannot be told from noise at this size."
        )
    return (
        f"Above the permutation null (explained variance > the 95th percentile with each column of Δ "
        f"shuffled): {', '.join(above)}; the other components cannot be told from noise."
    )


def _point_labels(projections: pd.DataFrame) -> list[str]:
    if "control" not in projections:
        return list(projections.index)
    return [f"{s} (control, projected)" if c else s for s, c in projections["control"].items()]


def _pivot(frame: pd.DataFrame, value: str) -> pd.DataFrame:
    return (
        frame.pivot(index="model", columns="target", values=value).astype(float)
        if len(frame)
        else pd.DataFrame()
    )


def _attribution_figures(t: dict[str, pd.DataFrame]) -> list:
    figs = []
    delta = t["delta"]
    for name in [n for n in t if n.startswith("similarity_")]:  # every measure the analysis produced
        if t[name].isna().all().all():
            continue
        frame = _cells(delta, t[name])
        figs.append(
            plots.scatter(
                frame,
                "similarity",
                "delta_points",
                text="cell",
                title=f"Δ vs {name.removeprefix('similarity_').replace('_', ' ')}",
            )
        )
    ls = t["length_shift"].dropna(subset=["length_shift", "delta"])
    if len(ls):
        ls = ls.assign(cell=ls["source"] + " → " + ls["target"], delta_points=ls["delta"] * 100)
        figs.append(
            plots.scatter(ls, "length_shift", "delta_points", text="cell", title="Δ vs output-length shift")
        )
    return figs


def _cells(delta: pd.DataFrame, sim: pd.DataFrame) -> pd.DataFrame:
    rows = [
        {
            "cell": f"{s} → {c}",
            "similarity": sim.at[s, c] if s in sim.index and c in sim.columns else None,
            "delta_points": delta.at[s, c] * 100,
        }
        for s in delta.index
        for c in delta.columns
    ]
    return pd.DataFrame(rows).dropna()


_MATRIX_INTRO = (
    "Each row is the base model fine-tuned on one source (same hyper-parameters for all); each column a target "
    "task. The top row of the score heatmap is the untuned base model. Δ is the change from the base in points "
    "(score × 100): blue helps, red hurts. Each Δ cell is a paired comparison of the tuned and the base "
    "model on the target's test rows (delta_stats: bootstrap 95% CI, exact McNemar p for accuracy-type "
    "metrics, paired permutation p otherwise, Benjamini–Hochberg q over all cells); cells with q < 0.05 "
    "are marked * at full colour, the rest are faded. Read asymmetry off Δ(a→b) vs Δ(b→a)."
)
_PCA_INTRO = (
    "PCA over the rows of Δ (columns centred). Components are latent 'traits' that fine-tuning moves together; "
    "loadings show which targets belong to a trait, projections each adapter's ability profile. Labels are "
    "suggested from the top-loading targets' task types unless set in the study's analysis.component_labels. "
    "Control sources (mislabel, rebalance, subsample) are left out of the fit and projected onto its "
    "components afterwards. A few rows are always explained by few components, so each component's share is "
    "compared with a permutation null: the same Δ with every column shuffled independently."
)
_ATTR_INTRO = (
    "Does transfer follow similarity between the source's training data and the target? Spearman correlation "
    "over off-diagonal cells of the non-control sources, with a 95% interval that resamples sources (one "
    "source's cells are not independent); anomalies are cells a least-squares fit on the similarities "
    "predicts worst."
)
_BEHAVIOUR_INTRO = (
    "What each model outputs on each target: mean output length (generated text only, never a chosen label) "
    "and how far the predicted-label distribution is from the gold distribution (classification), to see "
    "inherited length or label priors; `collapsed`: the most frequent predicted label has a share ≥ 0.9."
)
_CONTROLS_INTRO = (
    "Controls transform a source's training data: mislabel (wrong labels), rebalance (label distribution), "
    "subsample (size). If a mislabelled source keeps its transfer elsewhere while its in-task score collapses, "
    "the inputs, not the labels, drive that transfer."
)

_PREDICTION_INTRO = (
    "`spillover predict` estimates a new source's Δ row from this study without fine-tuning on it "
    "(docs/prediction.md). The check predicts each measured source's row from the others (leave one source "
    "out): Spearman ρ between predicted and measured rows (mean over held-out sources), sign accuracy on the "
    "cells delta_stats calls significant, regret of picking each target's best source by the prediction "
    "(points of the target's metric) and the cost as a fraction of the fine-tune it replaces. The baselines "
    "(semantic, task_type, mean_row) show what a prediction must beat. Predicted rows are estimates with "
    "an interval from this study's leave-one-out residuals, not measurements."
)

__all__ = ["sections", "transfer_sections"]
