"""The transfer study's report sections: the matrix, latent traits, attribution, behaviour, controls."""

from __future__ import annotations

import pandas as pd

from spillover.report import plots
from spillover.report.html import Section
from spillover.studies.contract import Analysis, Results


def sections(a: Analysis, results: Results) -> list[Section]:
    return transfer_sections(a, results.tasks)


def transfer_sections(a: Analysis, tasks) -> list[Section]:
    t = a.tables
    metric = {name: tasks[name].metric for name in t["matrix"].columns if name in tasks}
    labels = a.extra or []
    pcs = list(t["pca_loadings"].columns)
    axis = (f"{pcs[0]}: {labels[0]}", f"{pcs[1]}: {labels[1]}") if len(pcs) > 1 else None
    sections = [
        Section(
            "matrix",
            "Transfer matrix",
            _MATRIX_INTRO,
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
                    "Transfer Δ = M − base (points)",
                    diverging=True,
                    fmt="+.1f",
                    x_title="target",
                    y_title="fine-tuned on",
                    value_label="Δ (points)",
                ),
            ],
            tables=[
                ("Metric per target", pd.DataFrame({"metric": metric})),
                ("Scores M", t["matrix"]),
                ("Base row b", t["base"]),
                ("Δ", t["delta"]),
                ("Relative Δ = Δ / max(b, ε)", t["relative_delta"]),
                ("Asymmetry: Δ(a→b) vs Δ(b→a)", t["asymmetry"]),
            ],
        ),
        Section(
            "traits",
            "Latent traits (PCA of Δ)",
            _PCA_INTRO,
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
                            t["pca_projections"], t["pca_loadings"], (pcs[0], pcs[1]), axis_titles=axis
                        )
                    ]
                    if len(pcs) > 1
                    else []
                ),
            ],
            tables=[
                ("Explained variance", t["pca_variance"]),
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
                ("Spearman correlation of Δ with each similarity (bootstrap 95% CI)", t["attribution"]),
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
            tables=[("Behaviour statistics", t["behaviour"])],
        ),
        Section(
            "controls",
            "Controls",
            _CONTROLS_INTRO,
            tables=[("Controlled sources next to their plain source", t["controls"])],
        ),
        Section(
            "datasets",
            "Dataset statistics",
            "Token lengths use the model's tokenizer.",
            tables=[("Datasets", t["dataset_stats"])],
        ),
    ]
    return sections


def _pivot(frame: pd.DataFrame, value: str) -> pd.DataFrame:
    return (
        frame.pivot(index="model", columns="target", values=value).astype(float)
        if len(frame)
        else pd.DataFrame()
    )


def _attribution_figures(t: dict[str, pd.DataFrame]) -> list:
    figs = []
    delta = t["delta"]
    for name in (
        "similarity_semantic_cosine",
        "similarity_style_cosine",
        "similarity_label_js_distance",
        "similarity_length_match",
    ):
        if name not in t or t[name].isna().all().all():
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
    "(score × 100): blue helps, red hurts. Read asymmetry off Δ(a→b) vs Δ(b→a)."
)
_PCA_INTRO = (
    "PCA over the rows of Δ (columns centred). Components are latent 'traits' that fine-tuning moves together; "
    "loadings show which targets belong to a trait, projections each adapter's ability profile. Labels are "
    "suggested from the top-loading targets' task types unless set in the study's analysis.component_labels."
)
_ATTR_INTRO = (
    "Does transfer follow similarity between the source's training data and the target? Spearman correlation "
    "over off-diagonal cells, with a bootstrap 95% interval; anomalies are cells a least-squares fit on the "
    "similarities predicts worst."
)
_BEHAVIOUR_INTRO = (
    "What each model outputs on each target: mean output length (generation) and how far the predicted-label "
    "distribution is from the gold distribution (classification), to see inherited length or label priors."
)
_CONTROLS_INTRO = (
    "Controls transform a source's training data: mislabel (wrong labels), rebalance (label distribution), "
    "subsample (size). If a mislabelled source keeps its transfer elsewhere while its in-task score collapses, "
    "the inputs, not the labels, drive that transfer."
)

__all__ = ["sections", "transfer_sections"]
