"""Paired evidence for every study kind, written once (architecture principle 8): per-row scores of finished
evaluation jobs, and the paired comparison of two evaluated models on the same test rows.

Both sides of a comparison are read from the jobs' `predictions.jsonl` (the row's score under the task's
metric: field `correct` for log-likelihood tasks, `score` for generation) and aligned by example id, so only rows both models scored are compared. The
statistics themselves (paired bootstrap CI, exact McNemar or paired permutation p, BH q-values, seeds then
rows for replicates) are `analysis.paired`'s. Also the behaviour table every study with classification or
generation evaluations shows (length, label prior shift, majority share, collapse to one answer).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from spillover.analysis.paired import PairedResult, hierarchical_difference, metric_kind_of
from spillover.engine.plan import Job
from spillover.evaluation.predictions import read_predictions
from spillover.studies.contract import Results, mean_over_seeds

PREDICTIONS = "predictions.jsonl"
N_BOOT = 2000  # bootstrap replicates per comparison
N_PERM = 9999  # permutations per continuous-metric comparison (smallest p: 1e-4)


def row_scores(results: Results, job: Job | str) -> pd.Series:
    """One finished evaluation job's per-row scores (float), indexed by example id."""
    return file_scores(results.job_dir(job) / PREDICTIONS)


def file_scores(path: Path) -> pd.Series:
    """The per-row scores (float) of one predictions file, indexed by example id (e.g. a mixture probe's
    `probes/step-NNNNNN/<task>/predictions.jsonl`)."""
    rows = read_predictions(path)
    return pd.Series(
        [float(r["correct"] if "correct" in r else r["score"]) for r in rows],
        index=pd.Index([str(r["id"]) for r in rows], name="id"),
    )


def compare_jobs(
    results: Results,
    a: Sequence[Job | str],
    b: Sequence[Job | str],
    *,
    seed: int = 0,
    n_boot: int = N_BOOT,
) -> PairedResult:
    """Model a vs model b on the same rows: each side one evaluation job per training seed (a side with
    one job is shared by every seed of the other, e.g. the base model). With one job per side this is the
    plain paired test; with seeds the difference is averaged over them and the interval is a seeds-then-rows
    bootstrap (`analysis.paired.hierarchical_difference`)."""
    side_a = [row_scores(results, j) for j in a]
    side_b = [row_scores(results, j) for j in b]
    return compare_scores(side_a, side_b, seed=seed, n_boot=n_boot)


def compare_scores(
    side_a: Sequence[pd.Series], side_b: Sequence[pd.Series], *, seed: int = 0, n_boot: int = N_BOOT
) -> PairedResult:
    """`compare_jobs` on per-row score series (indexed by example id; one per training seed per side)
    already read, e.g. from `file_scores`: aligned on the ids every series holds."""
    common = sorted(set.intersection(*(set(s.index) for s in side_a + side_b)))
    per_a = [s.loc[common].to_numpy() for s in side_a]
    per_b = [s.loc[common].to_numpy() for s in side_b]
    kind = metric_kind_of(*per_a, *per_b)
    return hierarchical_difference(per_a, per_b, metric_kind=kind, n_boot=n_boot, seed=seed, n_perm=N_PERM)


def comparison_row(a: str, b: str, target: str, metric: str, result: PairedResult) -> dict[str, Any]:
    """One row for `analysis.paired.comparisons_table`."""
    return {"a": a, "b": b, "target": target, "metric": metric, **result.as_dict()}


def significance_sentence(table: pd.DataFrame, what: str = "comparisons") -> str:
    """'k of n comparisons are significant (BH q < 0.05); the rest are not at n = …'."""
    if table.empty:
        return f"No {what} finished yet."
    k, n = int(table["significant"].sum()), len(table)
    rows = table["n"].dropna()
    at = f"{int(rows.min())}" if rows.nunique() <= 1 else f"{int(rows.min())}–{int(rows.max())}"
    return (
        f"{k} of {n} {what} are significant (Benjamini–Hochberg q < 0.05 over this table); "
        f"the other {n - k} are not significant at n = {at} test rows."
    )


def comparison_grid(table: pd.DataFrame, index: str, columns: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A comparisons table pivoted for a heatmap: (diff, significant), both `index` × `columns` (first
    row of each pair, in table order)."""
    rows = list(dict.fromkeys(table[index]))
    cols = list(dict.fromkeys(table[columns]))
    grid = table.pivot_table(index=index, columns=columns, values=["diff", "significant"], aggfunc="first")
    diff = grid["diff"].reindex(index=rows, columns=cols).astype(float)
    significant = grid["significant"].reindex(index=rows, columns=cols).fillna(False).astype(bool)
    return diff, significant


SIGNIFICANCE_NOTE = (
    "Each row compares a with b on the test rows both scored: diff = mean(a) − mean(b) under the target's "
    "metric, a paired bootstrap 95% interval (rows resampled jointly), p from the exact McNemar test (0/1 "
    "scores) or a paired sign-flip permutation test (continuous scores), and q the Benjamini–Hochberg "
    "q-value over this table. Significant: q < 0.05. On the heatmap significant cells are drawn at full "
    "colour with a '*'; the faded cells are not significant, whatever their size."
)


def comparisons_section(table: pd.DataFrame, intro: str, what: str = "comparisons", fmt: str = "+.1f"):
    """The report section of a kind's `comparisons` table: `intro`, the `significance_sentence`, a heatmap
    of diff (points: ×100) per comparison (rows 'a − b') × target with the significant cells marked and the
    rest faded, and the table itself."""
    from spillover.report import plots
    from spillover.report.html import Section

    figures = []
    if not table.empty:
        pairs = table.assign(pair=[f"{a} − {b}" for a, b in zip(table["a"], table["b"], strict=True)])
        diff, significant = comparison_grid(pairs, "pair", "target")
        figures.append(
            plots.heatmap(
                diff * 100,
                "a − b (points; * = significant, BH q < 0.05; faded = not)",
                diverging=True,
                fmt=fmt,
                x_title="target",
                y_title="a − b",
                value_label="diff (points)",
                significant=significant,
            )
        )
    return Section(
        "comparisons",
        "Paired comparisons",
        f"{intro}\n\n{significance_sentence(table, what)}\n\n{SIGNIFICANCE_NOTE}",
        figures=figures,
        tables=[(f"Every paired comparison ({what})", table)],
    )


SPREAD_COLUMNS = ["model", "target", "metric", "seeds", "mean", "sd", "min", "max", "values"]


def seed_spread(results: Results) -> pd.DataFrame:
    """`tables/seed_spread.csv`: per model, target and metric scored once per training seed (`train.seeds`),
    the seeds that finished, the mean, the standard deviation (ddof=1), min, max and each seed's value."""
    jobs = [j for j in results.plan if j.id in results.results and results.seed_of(j) is not None]
    rows = results.replicated_scores(jobs)
    if rows.empty:
        return pd.DataFrame(columns=SPREAD_COLUMNS)
    return spread_of(rows, ["_job", "_row"])


def spread_of(rows: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """`seed_spread` of score rows (model, target, metric, value, `_seed`) grouped into replicates by `by`,
    for a kind whose scores are not score rows of its jobs (e.g. the mixture study's probes)."""
    out = []
    for _, g in rows.groupby(by, sort=False):
        v = g["value"].astype(float)
        out.append(
            {
                **g.iloc[0][["model", "target", "metric"]].to_dict(),
                "seeds": len(g),
                "mean": v.mean(),
                "sd": v.std(ddof=1) if len(g) > 1 else float("nan"),
                "min": v.min(),
                "max": v.max(),
                "values": ", ".join(f"{int(s)}: {x:.4g}" for s, x in zip(g["_seed"], v, strict=True)),
            }
        )
    return pd.DataFrame(out, columns=SPREAD_COLUMNS)


def seed_spread_section(table: pd.DataFrame):
    """The report section of `seed_spread`: how much a score moves from one training seed to another."""
    from spillover.report.html import Section

    sd = table["sd"].dropna()
    if sd.empty:
        summary = "No score has finished for two or more training seeds yet."
    else:
        top = table.loc[sd.idxmax()]
        summary = (
            f"Across {int(table['seeds'].max())} training seeds, a score's seed-to-seed standard deviation "
            f"is {sd.median() * 100:.1f} points at the median ({len(sd)} scores) and at most "
            f"{sd.max() * 100:.1f} points ({top['model']} on {top['target']}, {top['metric']}). Differences "
            "in the paired comparisons are averaged over the seeds, and their intervals resample seeds, then "
            "rows, so this spread is inside them."
        )
    return Section(
        "seed_spread",
        "Seed-to-seed spread",
        summary,
        tables=[("Every score trained once per seed", table)],
    )


def behaviour_table(results: Results, evals: list) -> pd.DataFrame:
    """One behaviour row per evaluated (model, target); training-seed replicates averaged (`collapsed`: in
    any seed; `label_proportions`: the first seed's). Evaluations recorded without behaviour statistics (a
    study folder older than them) are left out."""
    evals = [j for j in evals if "behaviour" in results.result(j)]
    frame = pd.DataFrame(
        [behaviour_row(j.params.label, j.params.target, results.result(j)["behaviour"]) for j in evals]
    )
    if frame.empty or not results.plan.replica_of:
        return frame
    frame["_replica"] = [results.replica(j) for j in evals]
    return mean_over_seeds(frame, ["_replica"], mean=["mean_length", "prior_shift", "majority_share"])


def behaviour_row(label: str, target: str, behaviour: dict[str, Any]) -> dict[str, Any]:
    """One row of the behaviour table from an eval job's behaviour statistics."""
    length = behaviour.get("token_length") or behaviour["char_length"]
    return {
        "model": label,
        "target": target,
        "mean_length": length["mean"],
        "length_unit": "tokens" if behaviour.get("token_length") else "chars",
        "prior_shift": behaviour.get("label_prior_shift"),
        "label_proportions": behaviour.get("label_proportions"),
        "majority_share": behaviour.get("majority_share"),
        "collapsed": behaviour.get("collapsed"),
    }
