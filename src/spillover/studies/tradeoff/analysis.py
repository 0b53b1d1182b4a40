"""The tradeoff study's analysis: runs (domain vs general score, ΔCL, Pareto), code length, token
probabilities, TALR weight curves and the paired comparisons (`comparisons.py`), from the finished jobs'
results. Pure over `Results`; no model needed.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from spillover.analysis.pareto import pareto_mask
from spillover.analysis.tokens import code_length_table, empirical_cdf, probability_summary
from spillover.engine.plan import Job
from spillover.studies.contract import BASE, Analysis, Results, mean_over_seeds
from spillover.studies.evidence import behaviour_table
from spillover.studies.tradeoff.comparisons import code_length_comparisons, comparisons
from spillover.studies.tradeoff.plan import TradeoffAnalyseJob
from spillover.training.artifacts import LOG_FILE

RUN_KEYS = ["domain", "format", "method", "lr", "alpha"]
SCORE_KEYS = ["value", "n", "ci_low", "ci_high"]
_BASE_RUN = {"domain": None, "format": None, "method": BASE, "lr": np.nan}


def analyse(results: Results, p: TradeoffAnalyseJob) -> Analysis:
    """All tables from whatever finished (missing values are NaN); `extra`: the token section's example
    sequences."""
    scores = score_rows(results, results.finished("eval"))
    own = scores["metric"] == scores["target"].map(lambda t: results.tasks[t].metric)
    runs = runs_table(scores[own], p.domains, p.general)  # each task's own metric (not macro-F1 beside it)
    cl_results = mean_code_lengths(results)
    cl = code_lengths(cl_results, runs, p.domains, p.cl_general)
    if len(cl) and len(runs):
        runs = runs.merge(
            cl[["model", "domain", "dCL_domain", "dCL_general"]], on=["model", "domain"], how="left"
        )
    token_results = [results.result(j) for j in results.finished("tokens")]
    paired, matched = comparisons(results, runs, p.general, p.match_tolerance)
    tables = {
        "runs": runs,
        "scores": scores,
        "pareto_front": runs[runs["on_front"]] if len(runs) else runs,
        "code_length": cl,
        "code_length_stats": code_length_comparisons(results),
        "talr_weights": talr_curves(results, results.finished("train")),
        "comparisons": paired,
        "matched_pairs": matched,
        "behaviour": behaviour_table(results, results.finished("eval")),
    }
    tables |= token_tables(token_results, p.tokens.thresholds, p.tokens.bins)
    examples = [dict(e, domain=r["task"], format=r["format"]) for r in token_results for e in r["examples"]]
    return Analysis(tables, footer=f"{len(runs)} models, {len(scores)} scores", extra=examples)


def score_rows(results: Results, evals: list[Job]) -> pd.DataFrame:
    """One row per finished evaluation score: model label, run keys (base: method 'base'), target, metric,
    value, CI."""
    jobs = {j.id: j.params for j in evals}
    rows = []
    for s in results.scores_of(evals).itertuples(index=False):
        p = jobs[s.job_id]
        run = p.run.model_dump() if p.run is not None else _BASE_RUN
        keys = {"target": s.target, "metric": s.metric} | {k: getattr(s, k) for k in SCORE_KEYS}
        rows.append({"model": p.label, **run, "alpha": p.alpha, **keys})
    frame = pd.DataFrame(rows, columns=["model", *RUN_KEYS, "target", "metric", *SCORE_KEYS])
    return mean_over_seeds(frame, ["model", "target", "metric"])  # training-seed replicates: their mean


def mean_code_lengths(results: Results) -> dict[str, dict[str, dict[str, float]]]:
    """label -> task -> {bits, n_tokens, n} of the finished code-length jobs; `bits` averaged over
    training-seed replicates."""
    per_label: dict[str, list[dict]] = {}
    for j in results.finished("codelen"):
        per_label.setdefault(j.params.label, []).append(results.result(j)["code_length"])
    out = {}
    for label, seeds in per_label.items():
        out[label] = {
            task: {**first, "bits": float(np.mean([s[task]["bits"] for s in seeds if task in s]))}
            for task, first in seeds[0].items()
        }
    return out


def runs_table(scores: pd.DataFrame, domains: list[str], general: list[str]) -> pd.DataFrame:
    """Per domain: the base model and every run, with domain_score, general_<task>, general_score (mean over
    the general tasks scored), series (method, + format, + WiSE α) and on_front (Pareto, incl. the base)."""
    parts = []
    for d in domains:
        mine = scores[(scores["domain"] == d) | (scores["model"] == BASE)]
        if mine.empty:
            continue
        wide = mine.pivot_table(index="model", columns="target", values="value", aggfunc="first")
        wide = wide[
            [t for t in [d, *general] if t in wide.columns]
        ]  # the base also has other domains' scores
        keys = mine.drop_duplicates("model").set_index("model")[RUN_KEYS[1:]]
        frame = keys.join(wide, how="left").reset_index()
        frame.insert(1, "domain", d)
        frame["domain_score"] = frame.get(d, np.nan)
        gen = [t for t in general if t in frame]
        for t in gen:
            frame[f"general_{t}"] = frame[t]
        frame["general_score"] = frame[gen].mean(axis=1, skipna=False) if gen else np.nan
        frame = frame.drop(columns=[c for c in [d, *general] if c in frame])
        frame["on_front"] = pareto_mask(frame["domain_score"], frame["general_score"])
        parts.append(frame)
    if not parts:
        return pd.DataFrame(columns=["model", *RUN_KEYS, "domain_score", "general_score", "on_front"])
    out = pd.concat(parts, ignore_index=True)
    out["series"] = [_series(r, out) for r in out.itertuples()]
    return out


def _series(row, frame: pd.DataFrame) -> str:
    """The curve a run belongs to: its method, + its format when several, + 'WiSE α' for interpolations."""
    if row.method == BASE:
        return BASE
    name = row.method
    if frame["format"].dropna().nunique() > 1:
        name += f" [{row.format}]"
    return name if row.alpha == 1.0 else f"{name} WiSE α={row.alpha:g}"


def code_lengths(
    results: dict[str, dict], runs: pd.DataFrame, domains: list[str], general: list[str]
) -> pd.DataFrame:
    """ΔCL table (see `analysis.tokens.code_length_table`) for every domain's base + runs."""
    parts = []
    for d in domains:
        labels = runs.loc[(runs["domain"] == d) & (runs["model"] != BASE), "model"]
        domain_of = {BASE: d} | {m: d for m in labels}
        parts.append(code_length_table(results, BASE, domain_of, general))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def token_tables(results: list[dict], thresholds: list[float], bins: int) -> dict[str, pd.DataFrame]:
    """token_summary (per domain × format), token_cdf and token_hist (p in [0, 1]) in long form."""
    summary, cdf, hist = [], [], []
    edges = np.linspace(0.0, 1.0, bins + 1)
    for r in results:
        key = {"domain": r["task"], "format": r["format"]}
        summary.append(key | {"n_sequences": r["n_sequences"]} | probability_summary(r["p"], thresholds))
        cdf.append(empirical_cdf(r["p"], np.linspace(0.0, 1.0, 101)).assign(**key))
        counts, _ = np.histogram(r["p"], bins=edges)
        hist.append(pd.DataFrame({"p_low": edges[:-1], "p_high": edges[1:], "count": counts}).assign(**key))
    cat = lambda frames: pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()  # noqa: E731
    return {"token_summary": pd.DataFrame(summary), "token_cdf": cat(cdf), "token_hist": cat(hist)}


def talr_curves(results: Results, train_jobs: list[Job]) -> pd.DataFrame:
    """Every `talr/*` statistic per logged step of every TALR run (from its train_log.jsonl): long form."""
    rows = []
    for job in train_jobs:
        if job.params.train.objective != "talr":
            continue
        path = results.job_dir(job) / LOG_FILE
        if not path.exists():
            continue
        run = job.params.run.model_dump()
        for line in path.read_text(encoding="utf-8").split("\n"):
            if not line.strip():
                continue
            record = json.loads(line)
            for k, v in record.items():
                if k.startswith("talr/"):
                    rows.append(
                        {
                            "run": f"{run['method']} lr={run['lr']:g}",
                            **run,
                            "step": record["step"],
                            "stat": k.removeprefix("talr/"),
                            "value": v,
                        }
                    )
    return pd.DataFrame(rows, columns=["run", "domain", "format", "method", "lr", "step", "stat", "value"])
