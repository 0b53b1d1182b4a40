"""The tradeoff study's paired comparisons (`tables/comparisons.csv`, issue 24): every model vs the base,
methods vs each other at the same learning rate, neighbouring learning rates of one method, and methods vs
each other at matched domain score.

- **vs base**: each run (and WiSE-FT point) against the base model, per target (its domain and every
  general task), on the test rows both scored.
- **same learning rate**: for each domain, format and learning rate, every pair of methods trained there
  (e.g. talr vs cross_entropy), per target.
- **neighbouring learning rates**: for each domain, format and method, every two consecutive learning
  rates (a = the lower), per target: does the smaller rate keep more general ability, at what domain cost.
- **matched domain score** (target `general`): for each pair of methods (X before Y in the study's order)
  on a domain and format, each trained run of X is paired with the run of Y whose domain score is closest,
  and each run of Y with the closest run of X (ties: the lower learning rate; a pair found both ways is
  kept once). A pair whose domain scores differ by more than the study's `match_tolerance` is not matched:
  it is listed (`matched` false) but not compared. Matched pairs are compared on the general tasks' test
  rows pooled (ids prefixed by task), so `diff` is the difference of the row-weighted mean general score
  (the `general_score` difference when the general tasks score the same number of rows).
  `matched_pairs` lists each pair's domain scores.

One BH family: q over the whole table. WiSE-FT points enter only the vs-base rows.

`code_length_comparisons` is a second table (`code_length_stats`, its own BH family, in bits per token
rather than score points): every model's code length on each code-length task against the base model's,
paired over the same test rows (each row's bits per target token), so ΔCL_domain (learning) and
ΔCL_general (forgetting) carry a CI and a q like every other difference.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations, pairwise

import pandas as pd

from spillover.analysis.paired import comparisons_table
from spillover.engine.plan import Job
from spillover.studies.contract import BASE, Results
from spillover.studies.evidence import compare_jobs, compare_scores, comparison_row, row_scores

GENERAL = "general"  # the target of a matched-domain-score comparison (the general tasks' rows pooled)


def eval_jobs(results: Results) -> dict[tuple[str, str], list[Job]]:
    """(model label, target) -> its finished evaluation jobs (one per training seed)."""
    jobs: dict[tuple[str, str], list[Job]] = defaultdict(list)
    for j in results.finished("eval"):
        jobs[(j.params.label, j.params.target)].append(j)
    return jobs


def trained_runs(results: Results) -> dict[str, object]:
    """Model label -> RunKey of every trained run (WiSE-FT points left out), in plan order."""
    return {
        j.params.label: j.params.run for j in results.finished("eval") if j.params.run and j.params.alpha == 1
    }


def vs_base_pairs(jobs: dict[tuple[str, str], list[Job]]) -> list[tuple[str, str, str]]:
    return [(m, BASE, t) for m, t in jobs if m != BASE and (BASE, t) in jobs]


def same_lr_pairs(
    jobs: dict[tuple[str, str], list[Job]], runs: dict[str, object]
) -> list[tuple[str, str, str]]:
    """(a, b, target) for every pair of methods at the same domain, format and learning rate."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    for label, r in runs.items():
        groups[(r.domain, r.format, r.lr)].append(label)
    targets = list(dict.fromkeys(t for _, t in jobs))
    return [
        (a, b, t)
        for labels in groups.values()
        for a, b in combinations(labels, 2)
        for t in targets
        if (a, t) in jobs and (b, t) in jobs
    ]


def lr_pairs(jobs: dict[tuple[str, str], list[Job]], runs: dict[str, object]) -> list[tuple[str, str, str]]:
    """(a, b, target) for every two consecutive learning rates of one method, domain and format (a lower)."""
    groups: dict[tuple, list[tuple[float, str]]] = defaultdict(list)
    for label, r in runs.items():
        groups[(r.domain, r.format, r.method)].append((r.lr, label))
    targets = list(dict.fromkeys(t for _, t in jobs))
    return [
        (a, b, t)
        for runs_of in groups.values()
        for (_, a), (_, b) in pairwise(sorted(runs_of))
        for t in targets
        if (a, t) in jobs and (b, t) in jobs
    ]


def matched_pairs(runs: dict[str, object], domain_score: dict[str, float], tolerance: float) -> pd.DataFrame:
    """a, b, domain, format, domain_score_a, domain_score_b, matched: each run paired with the
    closest-domain-score run of every other method; matched = within `tolerance` (see the module
    docstring)."""
    by_method: dict[tuple, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for label, r in sorted(runs.items(), key=lambda kv: kv[1].lr):
        if label in domain_score and domain_score[label] == domain_score[label]:  # not NaN
            by_method[(r.domain, r.format)][r.method].append(label)
    rows, seen = [], set()
    for (domain, fmt), methods in by_method.items():
        for x, y in combinations(methods, 2):
            for mine, other, flip in ((methods[x], methods[y], False), (methods[y], methods[x], True)):
                for a in mine:
                    b = min(other, key=lambda o: abs(domain_score[o] - domain_score[a]))
                    pair = (b, a) if flip else (a, b)
                    if pair not in seen:
                        seen.add(pair)
                        rows.append({"a": pair[0], "b": pair[1], "domain": domain, "format": fmt})
    out = pd.DataFrame(rows, columns=["a", "b", "domain", "format"])
    out["domain_score_a"] = out["a"].map(domain_score)
    out["domain_score_b"] = out["b"].map(domain_score)
    out["matched"] = (out["domain_score_a"] - out["domain_score_b"]).abs() <= tolerance + 1e-12
    return out


def _pooled(results: Results, jobs: dict, label: str, general: list[str]) -> list[pd.Series]:
    """One series per seed: the model's per-row scores on every general task, ids prefixed by task."""
    per_task = {t: jobs[(label, t)] for t in general if (label, t) in jobs}
    n_seeds = min((len(js) for js in per_task.values()), default=0)
    return [
        pd.concat([_prefixed(row_scores(results, js[i]), t) for t, js in per_task.items()])
        for i in range(n_seeds)
    ]


def code_length_comparisons(results: Results) -> pd.DataFrame:
    """`code_length_stats`: each model (runs and WiSE-FT points) vs the base on every code-length task,
    paired over the rows both scored; `diff` is the mean over rows of (a − b) bits per token — row-weighted,
    where the `code_length` table's ΔCL weights rows by their token count. Code-length results written
    before the per-row values were kept have no rows to pair and are left out."""
    jobs: dict[str, list[Job]] = defaultdict(list)
    for j in results.finished("codelen"):
        jobs[j.params.label].append(j)

    def per_row(js: list[Job], task: str) -> list[pd.Series] | None:
        rows = [results.result(j)["code_length"].get(task, {}).get("rows") for j in js]
        return None if any(r is None for r in rows) else [pd.Series(r, dtype=float) for r in rows]

    out = []
    for label, js in jobs.items():
        if label == BASE or BASE not in jobs:
            continue
        for task in results.result(js[0])["code_length"]:
            a, b = per_row(js, task), per_row(jobs[BASE], task)
            if a and b:
                out.append(comparison_row(label, BASE, task, "bits/token", compare_scores(a, b)))
    return comparisons_table(out)


def _prefixed(scores: pd.Series, task: str) -> pd.Series:
    return scores.set_axis([f"{task}/{i}" for i in scores.index])


def comparisons(
    results: Results, runs_table: pd.DataFrame, general: list[str], tolerance: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(`comparisons` table, `matched_pairs`) from the finished evaluations; `runs_table` gives domain
    scores (the `runs` table); `tolerance`: the largest domain-score difference of a matched pair."""
    jobs, runs = eval_jobs(results), trained_runs(results)
    metric = {t: results.tasks[t].metric for t in results.tasks}
    rows = [
        comparison_row(a, b, t, metric[t], compare_jobs(results, jobs[(a, t)], jobs[(b, t)]))
        for a, b, t in [*vs_base_pairs(jobs), *same_lr_pairs(jobs, runs), *lr_pairs(jobs, runs)]
    ]
    scores = runs_table.drop_duplicates("model").set_index("model")["domain_score"] if len(runs_table) else {}
    pairs = matched_pairs(runs, dict(scores), tolerance)
    general_metric = "/".join(dict.fromkeys(metric[t] for t in general))
    matched = pairs[pairs["matched"]]
    for a, b in zip(matched["a"], matched["b"], strict=True):
        side_a, side_b = _pooled(results, jobs, a, general), _pooled(results, jobs, b, general)
        if side_a and side_b:
            rows.append(comparison_row(a, b, GENERAL, general_metric, compare_scores(side_a, side_b)))
    return comparisons_table(rows), pairs
