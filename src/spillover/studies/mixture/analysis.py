"""The mixture study's analysis (methods.md §5.4–5.6): pure functions from probe records to tables.

`analyse` reads the probe records and mixture summaries of the finished jobs from `Results`;
`analyse_mixture` and the functions under it work on plain tables.

Definitions (also in docs/mixture.md):
- **Degraded.** At checkpoint s a task has degraded when its best score so far (the base model at step 0
  and every earlier checkpoint) lies above the upper end of the 95% bootstrap interval of its score at s:
  best_{u<s} > ci_high(s). The *degradation point* is the first such checkpoint.
- **Minor task.** A task whose run-average ratio in a mixture is below the equal share 1/K.
- **De-facto main task.** At the final checkpoint, the training task whose output style the model's
  outputs match best on the most tasks (`sounds_like`; ties: the higher mean style similarity).
  Reported next to the task with the largest gain over the base model and the task with the largest ratio.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from spillover.studies.contract import BASE, Analysis, Results
from spillover.studies.mixture.plan import MixtureAnalyseJob


def analyse(results: Results, p: MixtureAnalyseJob) -> Analysis:
    """The study's tables from whatever finished (a failed mixture is left out and named in a note)."""
    rows, ratios, plans = [], {}, []
    for j in [*results.finished("probe_base"), *results.finished("train_mixture")]:
        result, label = results.result(j), j.params.label
        rows += probe_rows(label, result["probes"])
        for r in result.get("mixture", []):
            ratios.setdefault(label, {})[r["task"]] = r["mean_ratio"]
            plans.append({"mixture": label, **r})
    ratio_frame = pd.DataFrame.from_dict(ratios, orient="index").reindex(columns=p.tasks)
    ratio_frame.index.name = "mixture"
    analysis = analyse_mixture(pd.DataFrame(rows), ratio_frame, pd.DataFrame(plans), p.mixtures)
    analysis.footer = f"{len(rows)} probes over {len(ratios)} mixtures"
    return analysis


def probe_rows(label: str, probes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flat rows (mixture, step, task, score, CI, behaviour) from one job's probe records."""
    rows = []
    for r in probes:
        b = r["behaviour"]
        length = b.get("token_length") or b["char_length"]
        rows.append(
            {
                "mixture": label,
                "step": r["step"],
                "task": r["task"],
                "metric": r["metric"],
                "value": r["value"],
                "ci_low": r["ci_low"],
                "ci_high": r["ci_high"],
                "n": r["n"],
                "mean_length": length["mean"],
                "p90_length": length["p90"],
                "hedge_rate": b.get("hedge_rate"),
                "format_fail_rate": b.get("format_fail_rate"),
                "prior_shift": b.get("label_prior_shift"),
                "label_proportions": b.get("label_proportions"),
                "majority_share": b.get("majority_share"),
                "collapsed": b.get("collapsed"),
                "sounds_like": b.get("sounds_like"),
                **{f"style/{k}": v for k, v in (b.get("style_similarity") or {}).items()},
            }
        )
    return rows


def with_base(rows: pd.DataFrame, mixtures: list[str]) -> pd.DataFrame:
    """Every mixture's curve starts at the base model's probe (step 0)."""
    base = rows[rows["mixture"] == BASE]
    tuned = rows[rows["mixture"] != BASE]
    starts = [base.assign(mixture=m) for m in mixtures if m in set(tuned["mixture"])]
    rank = {m: i for i, m in enumerate(mixtures)}
    out = pd.concat([*starts, tuned], ignore_index=True)
    return out.sort_values(
        ["mixture", "step"], key=lambda c: c.map(rank) if c.name == "mixture" else c, kind="stable"
    ).reset_index(drop=True)  # study order, tasks as probed


def mark_degradation(curves: pd.DataFrame) -> pd.DataFrame:
    """Adds best_before (best score at earlier checkpoints) and degraded (best_before > ci_high).
    Rows must be in step order within each (mixture, task)."""
    out = curves.copy()
    grouped = out.groupby(["mixture", "task"], sort=False)["value"]
    out["best_before"] = grouped.transform(lambda v: v.cummax().shift(1))
    out["degraded"] = out["best_before"] > out["ci_high"]
    return out.reset_index(drop=True)


def degradation_table(curves: pd.DataFrame, ratios: pd.DataFrame) -> pd.DataFrame:
    """Per (mixture, task): ratio, minor?, base / best / final score, first degradation step, and the drop
    from the best at the end. `curves` as returned by `mark_degradation`; `ratios`: mixture × task."""
    k = len(ratios.columns)
    rows = []
    for (mix, task), c in curves.groupby(["mixture", "task"], sort=False):
        c = c.sort_values("step")
        best = c.loc[c["value"].idxmax()]
        hit = c[c["degraded"]]
        ratio = ratios.at[mix, task] if mix in ratios.index and task in ratios.columns else np.nan
        rows.append(
            {
                "mixture": mix,
                "task": task,
                "mean_ratio": ratio,
                "minor": bool(ratio < 1 / k - 1e-9),
                "base": c["value"].iloc[0],
                "best": best["value"],
                "best_step": int(best["step"]),
                "final": c["value"].iloc[-1],
                "final_minus_best": c["value"].iloc[-1] - best["value"],
                "first_degraded_step": int(hit["step"].iloc[0]) if len(hit) else None,
                "degraded_at_end": bool(c["degraded"].iloc[-1]),
            }
        )
    return pd.DataFrame(rows)


def final_rows(curves: pd.DataFrame) -> pd.DataFrame:
    """The last checkpoint of every (mixture, task)."""
    last = curves.groupby(["mixture", "task"])["step"].transform("max")
    return curves[curves["step"] == last].reset_index(drop=True)


def main_task_table(final: pd.DataFrame, base: pd.DataFrame, ratios: pd.DataFrame) -> pd.DataFrame:
    """Per mixture: the de-facto main task (style majority), the largest-gain task, the largest-ratio task."""
    rows = []
    base_score = base.set_index("task")["value"]
    style_cols = [c for c in final.columns if c.startswith("style/")]
    for mix, f in final.groupby("mixture", sort=False):
        votes = Counter(x for x in f["sounds_like"] if isinstance(x, str))
        mean_sim = f[style_cols].astype(float).mean() if style_cols else pd.Series(dtype=float)
        style_main = (
            max(votes, key=lambda t: (votes[t], mean_sim.get(f"style/{t}", -np.inf))) if votes else None
        )
        gain = f.set_index("task")["value"] - base_score
        rows.append(
            {
                "mixture": mix,
                "main_task_by_style": style_main,
                "style_votes": ", ".join(f"{t}: {n}" for t, n in votes.most_common()),
                "largest_gain_task": gain.idxmax() if gain.notna().any() else None,
                "largest_gain": gain.max(),
                "largest_ratio_task": ratios.loc[mix].idxmax() if mix in ratios.index else None,
            }
        )
    return pd.DataFrame(rows)


def analyse_mixture(
    rows: pd.DataFrame, ratios: pd.DataFrame, plans: pd.DataFrame, mixtures: list[str]
) -> Analysis:
    """rows: `probe_rows` of every job (base included); ratios: mixture × task run-average ratio;
    plans: per (mixture, task) sequences drawn, realised fraction and epochs. No tables before a mixture
    has finished (only a note)."""
    out = Analysis(tables={})
    if rows.empty or not (rows["mixture"] != BASE).any():
        out.notes.append("no mixture finished training: nothing to analyse yet")
        return out
    curves = mark_degradation(with_base(rows, mixtures))
    final = final_rows(curves)
    base = rows[rows["mixture"] == BASE]
    keep = ["mixture", "step", "task", "metric", "value", "ci_low", "ci_high", "n", "best_before", "degraded"]
    behaviour_cols = [c for c in rows.columns if c not in keep[:8]]
    out.tables["curves"] = curves[keep]
    out.tables["final_scores"] = _final_matrix(final, base)
    out.tables["final"] = final[keep[:8]].merge(_long(ratios), on=["mixture", "task"], how="left")
    out.tables["ratios"] = ratios
    out.tables["plans"] = plans
    out.tables["degradation"] = degradation_table(curves, ratios)
    out.tables["main_task"] = main_task_table(final, base, ratios)
    out.tables["behaviour"] = curves[["mixture", "step", "task", *behaviour_cols]].reset_index(drop=True)
    out.tables["behaviour_final"] = pd.concat([base, final], ignore_index=True)[
        ["mixture", "task", *behaviour_cols]
    ]
    missing = sorted(set(mixtures) - set(rows["mixture"]))
    if missing:
        out.notes.append(f"mixtures without results (failed or not run yet): {', '.join(missing)}")
    return out


def _final_matrix(final: pd.DataFrame, base: pd.DataFrame) -> pd.DataFrame:
    """mixture × task final scores with the base row first and a `mean` column."""
    both = pd.concat([base, final], ignore_index=True)
    order = list(dict.fromkeys(both["mixture"]))
    matrix = both.pivot(index="mixture", columns="task", values="value").reindex(order)
    matrix["mean"] = matrix.mean(axis=1)
    return matrix


def _long(ratios: pd.DataFrame) -> pd.DataFrame:
    return (
        ratios.rename_axis("mixture")
        .reset_index()
        .melt(id_vars="mixture", var_name="task", value_name="mean_ratio")
    )
