"""The tradeoff study's report sections: domain vs general score (Pareto), scores over the learning rate,
code length, token probabilities under the base model, TALR weights, all scores."""

from __future__ import annotations

import pandas as pd

from spillover.report import plots
from spillover.report.html import ColouredText, Section
from spillover.studies.contract import BASE, Analysis, Results
from spillover.studies.evidence import comparisons_section


def sections(a: Analysis, results: Results) -> list[Section]:
    return tradeoff_sections(a.tables, a.extra or [])


def tradeoff_sections(t: dict[str, pd.DataFrame], examples: list[dict]) -> list[Section]:
    runs = t["runs"]
    return [
        Section(
            "pareto",
            "Domain vs general score",
            _PARETO_INTRO,
            figures=_pareto_figures(runs),
            tables=[("Every model: domain score, general score (mean and per task), ΔCL, Pareto", runs)],
        ),
        _comparisons(t),
        Section("lr", "Scores over the learning rate", _LR_INTRO, columns=2, figures=_lr_figures(runs)),
        Section(
            "codelength",
            "Code length (bits per target token)",
            _CL_INTRO,
            figures=_cl_figures(t["code_length"]),
            tables=[
                ("Code length and ΔCL = tuned − base", t["code_length"]),
                (
                    "ΔCL as paired tests: each model vs the base on the same test rows, bits per token per "
                    "row (code_length_stats; BH q over this table)",
                    t["code_length_stats"],
                ),
            ],
        ),
        Section(
            "tokens",
            "Token probabilities under the base model",
            _TOKENS_INTRO,
            columns=2,
            figures=_token_figures(t),
            tables=[("Hard-token fractions", t["token_summary"])],
            coloured=[
                ColouredText(f"{e['domain']} ({e['format']}) example {e['id']}", e["tokens"], e["p"])
                for e in examples
            ],
        ),
        Section(
            "talr",
            "TALR weights during training",
            _TALR_INTRO,
            columns=2,
            figures=_talr_figures(t["talr_weights"]),
            notes=[] if len(t["talr_weights"]) else ["No TALR run in this study (or none finished)."],
        ),
        Section(
            "scores",
            "All scores",
            "Every evaluation with its bootstrap 95% interval, and what each model answered: label prior shift "
            "(total variation from the gold labels), the share of its most frequent answer, collapse to one answer.",
            tables=[("Scores", t["scores"]), ("Behaviour per model and task", t["behaviour"])],
        ),
    ]


def _comparisons(t: dict[str, pd.DataFrame]) -> Section:
    section = comparisons_section(t["comparisons"], _COMPARISONS_INTRO)
    section.tables.append(("Matched domain score: each pair and its domain scores", t["matched_pairs"]))
    return section


def _pareto_figures(runs: pd.DataFrame) -> list:
    figs = []
    for domain, frame in runs.groupby("domain", sort=False):
        base = frame[frame["model"] == BASE]
        points = frame[frame["model"] != BASE].dropna(subset=["domain_score", "general_score"])
        points = points.assign(point=[f"lr={r.lr:g}" for r in points.itertuples()])
        marker = (
            (float(base["domain_score"].iloc[0]), float(base["general_score"].iloc[0])) if len(base) else None
        )
        front = frame[frame["on_front"]]
        figs.append(
            plots.pareto(
                points,
                "domain_score",
                "general_score",
                color="series",
                frontier=front,
                marker=marker,
                text="point",
                title=f"{domain}: domain vs general score",
            )
        )
    return figs


def _lr_figures(runs: pd.DataFrame) -> list:
    tuned = runs[(runs["model"] != BASE) & (runs["alpha"] == 1.0)]
    figs = []
    for domain, frame in tuned.groupby("domain", sort=False):
        for col in ("domain_score", "general_score", "dCL_general"):
            if col in frame and frame[col].notna().any():
                figs.append(
                    plots.lines(frame, "lr", col, color="series", log_x=True, title=f"{domain}: {col} vs lr")
                )
    return figs


def _cl_figures(cl: pd.DataFrame) -> list:
    tuned = cl[cl["model"] != BASE] if len(cl) else cl
    if not len(tuned):
        return []
    return [
        plots.scatter(
            tuned,
            "dCL_domain",
            "dCL_general",
            text="model",
            trendline=False,
            title="ΔCL_general (forgetting, > 0) vs ΔCL_domain (learning, < 0)",
        )
    ]


def _token_figures(t: dict[str, pd.DataFrame]) -> list:
    figs = []
    hist, cdf = t["token_hist"], t["token_cdf"]
    for (domain, fmt), frame in hist.groupby(["domain", "format"], sort=False) if len(hist) else []:
        frame = frame.assign(
            bin=[f"{a:.2f}–{b:.2f}" for a, b in zip(frame["p_low"], frame["p_high"], strict=True)]
        )
        figs.append(
            plots.bars(frame, "bin", "count", title=f"{domain} ({fmt}): histogram of p under the base model")
        )
    if len(cdf):
        cdf = cdf.assign(data=cdf["domain"] + " (" + cdf["format"] + ")")
        figs.append(
            plots.lines(cdf, "p", "cdf", color="data", title="CDF of p: fraction of tokens with p ≤ x")
        )
    return figs


def _talr_figures(w: pd.DataFrame) -> list:
    if not len(w):
        return []
    quant = w[w["stat"].isin(["w_p10", "w_p50", "w_p90", "w_mean"])]
    quant = quant.assign(curve=quant["run"] + " " + quant["stat"])
    tau = w[w["stat"] == "tau"]
    return [
        plots.lines(quant, "step", "value", color="curve", title="TALR weights: mean and quantiles per step"),
        plots.lines(tau, "step", "value", color="run", title="TALR τ (batch median of sequence mean loss)"),
    ]


_PARETO_INTRO = (
    "Each point is one fine-tuned model: x = its score on the domain task it was tuned on, y = its general score "
    "(the mean over the general tasks). The star is the base model; the line joins the Pareto frontier (no other "
    "model is better on both). Up-right is better; a point below the star has forgotten general ability."
)
_LR_INTRO = (
    "The tuned models (WiSE-FT interpolations excluded) per method over the learning rate: domain score, general "
    "score and ΔCL_general (change in bits per token on the general tasks; > 0 = forgetting)."
)
_CL_INTRO = (
    "Code length = mean cross-entropy of the target tokens in bits per token, on the first codelength.limit test "
    "examples of each task, scored as training renders them. ΔCL_domain < 0: the model learned the domain; "
    "ΔCL_general > 0: it compresses the general tasks' answers worse (forgetting). CL_general is the mean over "
    "the general tasks."
)
_TOKENS_INTRO = (
    "The base model's probability p of every target token of the domain's training data (the sequences training "
    "sees). Most tokens easy (p near 1) and a few hard ones is the situation TALR targets. Examples: each token "
    "shaded by 1 − p (dark red = hard); hover a token for its p."
)
_TALR_INTRO = (
    "Per step of each TALR run (from train_log.jsonl): the token weights' mean and 10/50/90% quantiles, and τ. "
    "Weights rising over training mean formerly hard tokens became easier and gained weight (the curriculum). "
    "Values are averages over the step's micro-batches, weighted by their target tokens."
)
_COMPARISONS_INTRO = """Every run against the base model per target; methods against each other at the \
same learning rate per target; each method's neighbouring learning rates per target (a = the lower rate); \
and methods at matched domain score: each run of one method paired with the run of the other whose domain \
score is closest (ties: the lower learning rate) and within the study's match_tolerance, compared on the \
general tasks' test rows pooled (target "general"); pairs farther apart are listed, not compared. All \
paired on the same test rows."""
