"""The mixture study's analysis (methods.md §5.4–5.6): pure functions from probe records to tables.

`analyse` reads the probe records and mixture summaries of the finished jobs from `Results`;
`analyse_mixture` and the functions under it work on plain tables.

Definitions (also in docs/mixture.md):
- **Paired probe comparisons** (`comparisons`): every checkpoint's probe of a task vs the base model's
  probe (step 0) and vs the previous checkpoint's probe, on the same probe rows (each probe keeps its
  per-row scores in `probes/step-NNNNNN/<task>/predictions.jsonl`); and every two mixtures' final
  checkpoints on each task (`vs` = "mixture <b>"); q: Benjamini–Hochberg over the table.
- **Degraded.** At checkpoint s a task has degraded when it is significantly worse than at step 0: its
  paired difference to the base model's probe is negative with q < 0.05. The *degradation point* is the
  first such checkpoint. (A running best of earlier noisy scores is biased upward, so it is not the
  reference.) `worse_than_previous` marks a significant drop from the previous checkpoint.
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

from spillover.analysis.mixture_regression import MIN_MIXTURES, leave_one_mixture_out, loo_summary, recommend
from spillover.analysis.paired import COMPARISON_COLUMNS, comparisons_table
from spillover.engine.plan import Job
from spillover.studies.contract import BASE, Analysis, Results, mean_over_seeds
from spillover.studies.evidence import PREDICTIONS, compare_scores, comparison_row, file_scores, spread_of
from spillover.studies.mixture.handlers import PROBES
from spillover.studies.mixture.plan import MixtureAnalyseJob
from spillover.studies.mixture.spec import RecommendSettings

PROBE_KEYS = ["mixture", "step", "task", "vs"]  # vs: "step 0", "previous", or "mixture <other>" (finals)


def analyse(results: Results, p: MixtureAnalyseJob) -> Analysis:
    """The study's tables from whatever finished (a failed mixture is left out and named in a note)."""
    rows, ratios, plans = [], {}, []
    jobs = [*results.finished("probe_base"), *results.finished("train_mixture")]
    metrics = {t: results.tasks[t].metric for t in p.tasks}
    paired = probe_comparisons(probe_scores(results, jobs), metrics, p.mixtures)
    seeds = []  # the training seed of each probe row (None: shared by every seed, or one seed)
    for j in jobs:
        result, label = results.result(j), j.params.label
        mine = probe_rows(label, result["probes"])
        rows += mine
        seeds += [results.seed_of(j)] * len(mine)
        if results.replica(j) != j.id:
            continue  # a later training seed's replicate: its plan is reported with the first seed's
        for r in result.get("mixture", []):
            ratios.setdefault(label, {})[r["task"]] = r["mean_ratio"]
            plans.append({"mixture": label, **r})
    ratio_frame = pd.DataFrame.from_dict(ratios, orient="index").reindex(columns=p.tasks)
    ratio_frame.index.name = "mixture"
    probes = mean_probe_rows(pd.DataFrame(rows))
    analysis = analyse_mixture(probes, ratio_frame, pd.DataFrame(plans), p.mixtures, paired, p.recommend)
    if results.plan.seed_of and rows:
        analysis.tables["seed_spread"] = probe_spread(pd.DataFrame(rows).assign(_seed=seeds))
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


def mean_probe_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """One probe row per (mixture, step, task): training-seed replicates averaged (numbers: the mean, CI NaN
    when several seeds; `collapsed`: in any seed; the rest: the first seed's)."""
    if rows.empty:
        return rows
    numeric = [c for c in rows.columns if c not in ("step", "n") and pd.api.types.is_float_dtype(rows[c])]
    return mean_over_seeds(rows, ["mixture", "step", "task"], mean=numeric)


def probe_spread(rows: pd.DataFrame) -> pd.DataFrame:
    """`seed_spread` of the probes trained once per seed: model = "mixture · step s", target = the task."""
    rows = rows[rows["_seed"].notna()]
    rows = rows.assign(model=[probe_label(m, s) for m, s in zip(rows["mixture"], rows["step"], strict=True)])
    return spread_of(rows.rename(columns={"task": "target"}), ["model", "target"])


def probe_label(mixture: str, step: int) -> str:
    return f"{mixture} · step {step}"


def probe_scores(results: Results, jobs: list[Job]) -> dict[tuple[str, int, str], list[pd.Series]]:
    """(mixture label, step, task) -> the probe's per-row scores, one series per training seed, for every
    probe whose rows were kept."""
    out: dict[tuple[str, int, str], list[pd.Series]] = {}
    for j in jobs:
        for r in results.result(j)["probes"]:
            path = results.job_dir(j) / PROBES / f"step-{r['step']:06d}" / r["task"] / PREDICTIONS
            if path.exists():
                out.setdefault((j.params.label, int(r["step"]), r["task"]), []).append(file_scores(path))
    return out


def probe_comparisons(
    scores: dict[tuple[str, int, str], list[pd.Series]], metrics: dict[str, str], mixtures: list[str]
) -> pd.DataFrame:
    """PROBE_KEYS + the comparisons columns: each checkpoint vs step 0 (the base model's probe) and vs the
    previous checkpoint (from the second on), and every two mixtures' final checkpoints on each task (the
    earlier mixture in study order is `a`), paired on the rows both probes scored."""
    rank = {m: i for i, m in enumerate(mixtures)}
    tuned = sorted((k for k in scores if k[0] != BASE), key=lambda k: (rank.get(k[0], len(rank)), k[1]))
    keys, rows, previous = [], [], {}
    for mix, step, task in tuned:
        refs = [("step 0", (BASE, 0, task))]
        refs += [("previous", previous[(mix, task)])] if (mix, task) in previous else []
        for vs, ref in refs:
            if ref not in scores:
                continue
            result = compare_scores(scores[(mix, step, task)], scores[ref])
            b = probe_label(BASE if vs == "step 0" else mix, ref[1])
            rows.append(comparison_row(probe_label(mix, step), b, task, metrics[task], result))
            keys.append({"mixture": mix, "step": step, "task": task, "vs": vs})
        previous[(mix, task)] = (mix, step, task)
    final = {}  # (mixture, task) -> its last probe, in study order
    for mix, step, task in tuned:
        final[(mix, task)] = (mix, step, task)
    for (a, task), key_a in final.items():  # every two mixtures' final checkpoints, on each task
        for (b, other), key_b in final.items():
            if other != task or rank.get(b, len(rank)) <= rank.get(a, len(rank)):
                continue
            result = compare_scores(scores[key_a], scores[key_b])
            rows.append(
                comparison_row(
                    probe_label(a, key_a[1]), probe_label(b, key_b[1]), task, metrics[task], result
                )
            )
            keys.append({"mixture": a, "step": key_a[1], "task": task, "vs": f"mixture {b}"})
    table = comparisons_table(rows)
    keys_frame = pd.DataFrame(keys, columns=PROBE_KEYS).astype({"step": int})
    return pd.concat([keys_frame, table], axis=1)


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


def mark_degradation(curves: pd.DataFrame, paired: pd.DataFrame) -> pd.DataFrame:
    """Adds diff_vs_step0, q_vs_step0, degraded (significantly worse than step 0: diff < 0 and
    significant) and worse_than_previous (significantly worse than the previous checkpoint) from `paired`
    (`probe_comparisons`). Step 0 and probes without kept rows are never degraded."""
    cols = ["mixture", "step", "task", "diff", "q", "significant"]
    vs0 = paired.loc[paired["vs"] == "step 0", cols]
    vs0 = vs0.rename(columns={"diff": "diff_vs_step0", "q": "q_vs_step0", "significant": "_sig0"})
    prev = paired.loc[paired["vs"] == "previous", cols[:4] + ["significant"]]
    prev = prev.rename(columns={"diff": "_diff_prev", "significant": "_sig_prev"})
    out = curves.merge(vs0, on=cols[:3], how="left").merge(prev, on=cols[:3], how="left")
    out["degraded"] = out["_sig0"].eq(True) & (out["diff_vs_step0"] < 0)
    out["worse_than_previous"] = out["_sig_prev"].eq(True) & (out["_diff_prev"] < 0)
    return out.drop(columns=["_sig0", "_diff_prev", "_sig_prev"]).reset_index(drop=True)


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
    rows: pd.DataFrame,
    ratios: pd.DataFrame,
    plans: pd.DataFrame,
    mixtures: list[str],
    paired: pd.DataFrame,
    recommend: RecommendSettings | None = None,
) -> Analysis:
    """rows: `probe_rows` of every job (base included); ratios: mixture × task run-average ratio;
    plans: per (mixture, task) sequences drawn, realised fraction and epochs; paired: `probe_comparisons`.
    No tables before a mixture has finished (only a note)."""
    out = Analysis(tables={})
    if rows.empty or not (rows["mixture"] != BASE).any():
        out.notes.append("no mixture finished training: nothing to analyse yet")
        return out
    curves = mark_degradation(with_base(rows, mixtures), paired)
    final = final_rows(curves)
    base = rows[rows["mixture"] == BASE]
    keep = ["mixture", "step", "task", "metric", "value", "ci_low", "ci_high", "n"]
    keep += ["diff_vs_step0", "q_vs_step0", "degraded", "worse_than_previous"]
    behaviour_cols = [c for c in rows.columns if c not in keep[:8]]
    out.tables["curves"] = curves[keep]
    out.tables["comparisons"] = paired[COMPARISON_COLUMNS]
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
    _ratio_model(out, ratios, recommend or RecommendSettings())
    missing = sorted(set(mixtures) - set(rows["mixture"]))
    if missing:
        out.notes.append(f"mixtures without results (failed or not run yet): {', '.join(missing)}")
    return out


def _ratio_model(out: Analysis, ratios: pd.DataFrame, settings: RecommendSettings) -> None:
    """Score-vs-ratio regression (`analysis.mixture_regression`): leave-one-mixture-out check
    (`mixture_prediction`, `mixture_prediction_summary`) and proposed ratios (`mixture_recommendation`)."""
    final = out.tables["final_scores"]
    scores = final.drop(index=BASE, errors="ignore").drop(columns="mean")
    scores = scores.loc[[m for m in scores.index if m in ratios.index]]
    if len(scores) < MIN_MIXTURES:
        out.notes.append(
            f"ratio regression needs at least {MIN_MIXTURES} finished mixtures; {len(scores)} finished"
        )
        return
    ratios = ratios.loc[scores.index, scores.columns].fillna(0.0)
    fits = {FINAL_FIT: scores} | {
        f"step {step} (proxy)": early for step, early in _proxy_scores(out.tables["curves"], scores).items()
    }
    loo = pd.concat(
        [
            leave_one_mixture_out(ratios, scores, fit_scores=fit).assign(fit_on=name)
            for name, fit in fits.items()
        ],
        ignore_index=True,
    )
    out.tables["mixture_prediction"] = loo[["fit_on", "mixture", "task", "measured", "predicted"]]
    out.tables["mixture_prediction_summary"] = loo_summary(loo, by=["fit_on"])
    if BASE in final.index:
        base = final.loc[BASE].drop("mean")
        out.tables["mixture_recommendation"] = recommend(
            ratios, scores, base, settings.epsilon, settings.grid
        )


FINAL_FIT = "final"  # the regression fitted on the other mixtures' final scores


def _proxy_scores(curves: pd.DataFrame, final: pd.DataFrame) -> dict[int, pd.DataFrame]:
    """step -> mixture × task scores at every probe step before the end that every mixture in `final` was
    probed at (step 0, the untuned model, is the same for all and left out): short proxy runs."""
    rows = curves[curves["mixture"].isin(final.index) & (curves["step"] > 0)]
    last = rows.groupby("mixture")["step"].max()
    steps = set.intersection(*(set(part["step"]) for _, part in rows.groupby("mixture")))
    early = sorted(s for s in steps if s < last.min())
    return {
        int(s): rows[rows["step"] == s]
        .pivot(index="mixture", columns="task", values="value")
        .reindex(index=final.index, columns=final.columns)
        for s in early
    }


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
