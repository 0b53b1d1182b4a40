"""The transfer study's analysis: every table of methods.md §1.6 from the finished jobs' results.

Pure over what the study folder holds (the store's scores, per-row predictions, dataset statistics and
behaviour statistics, and what `spillover predict` wrote under prediction/); returns named DataFrames that the report draws and `tables/` exports. Every Δ cell is also a paired
comparison of the tuned and the base model on the target's test rows (`delta_stats`, issue 24); control
sources (labels with "+", e.g. "sst2+mislabel(fraction=1.0)") are left out of the PCA and attribution fits
and projected onto the fitted components afterwards.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spillover.analysis.attribution import anomalies, attribute, length_shift_table, similarity_frames
from spillover.analysis.paired import comparisons_table, delta_stats_table, pca_null
from spillover.analysis.traits import TransferPCA, fit_held_out
from spillover.analysis.transfer import BASE, task_of, transfer_tables
from spillover.data.stats import DatasetStats, syntax_summary
from spillover.studies.contract import Analysis, Results
from spillover.studies.evidence import (
    PREDICTIONS,
    behaviour_table,
    compare_jobs,
    compare_scores,
    comparison_row,
)
from spillover.studies.transfer.plan import TransferAnalyseJob
from spillover.studies.transfer.spec import TransferAnalysisSpec

PREDICTION = "prediction"  # STUDY_DIR/prediction/: what `spillover predict` wrote (studies.transfer.predict)
PREDICTION_EVAL = "prediction_eval.csv"


def analyse(results: Results, p: TransferAnalyseJob) -> Analysis:
    """The study's tables from whatever finished (missing cells are NaN)."""
    evals = results.finished("eval")
    behaviour = behaviour_table(results, evals)
    stats: dict[str, dict[str, Any]] = {"source": {}, "target": {}}
    for j in results.finished("stats"):
        stats[j.params.role][j.params.label] = results.result(j)
    tasks = results.tasks
    task_types = {t: tasks[t].task_type or tasks[t].type for t in p.targets}
    scores = results.long_scores(evals)
    stats_table = delta_stats(results, p.sources, p.targets, seed=results.spec.seed)
    analysis = analyse_transfer(
        scores,
        stats["source"],
        stats["target"],
        behaviour,
        p.sources,
        p.targets,
        task_types,
        p.analysis,
        seed=results.spec.seed,
        delta_stats=stats_table,
        metrics={t: tasks[t].metric for t in p.targets},
    )
    analysis.tables["length_stats"] = length_stats(results, p.sources, p.targets, seed=results.spec.seed)
    analysis.tables["control_stats"] = control_stats(results, p.sources, p.targets, seed=results.spec.seed)
    analysis.tables.update(prediction_tables(results.root))
    analysis.footer = f"{len(evals)} evaluations, {len(scores)} scores"
    return analysis


def prediction_tables(root: Path) -> dict[str, pd.DataFrame]:
    """What `spillover predict` left in STUDY_DIR/prediction/: the leave-one-source-out check
    (`prediction_eval`) and every predicted row with its method and cost (`predicted_delta`), so that the
    study's tables/ and report show them and a re-render keeps them. Rows written with `--out` elsewhere are
    not the study's and are not read."""
    folder = root / PREDICTION
    tables: dict[str, pd.DataFrame] = {}
    if (folder / PREDICTION_EVAL).exists():
        tables["prediction_eval"] = pd.read_csv(folder / PREDICTION_EVAL)
    rows = []
    for path in sorted(folder.glob("*/predicted_delta.csv")):
        cost_file = path.with_name("cost.json")
        cost = json.loads(cost_file.read_text()) if cost_file.exists() else {}
        rows.append(
            pd.read_csv(path).assign(
                method=cost.get("method"), cost_fraction=cost.get("fraction_of_a_fine_tune")
            )
        )
    if rows:
        tables["predicted_delta"] = pd.concat(rows, ignore_index=True)
    return tables


def analyse_transfer(
    scores: pd.DataFrame,
    source_stats: dict[str, dict[str, Any]],
    target_stats: dict[str, dict[str, Any]],
    behaviour: pd.DataFrame,
    sources: list[str],
    targets: list[str],
    task_types: dict[str, str],
    settings: TransferAnalysisSpec,
    seed: int = 0,
    delta_stats: pd.DataFrame | None = None,
    metrics: dict[str, str] | None = None,
) -> Analysis:
    """scores: (model, target, value, n, ci_low, ci_high); behaviour: (model, target, mean_length, prior_shift,
    label_proportions); *_stats: DatasetStats dicts keyed by source label / target name; delta_stats: the
    paired Δ table (`delta_stats`; empty when None); metrics: {target: its own metric}, the one the matrix
    holds (`scores` also has the metrics reported beside it). `extra`: the principal components' labels."""
    out = Analysis(tables={})
    tt = transfer_tables(scores, sources, targets, metrics=metrics)
    out.tables |= {
        "scores": scores,
        "matrix": tt.scores,
        "base": tt.base.to_frame().T,
        "delta": tt.delta,
        "relative_delta": tt.relative,
        "asymmetry": tt.asymmetry,
        "delta_stats": delta_stats if delta_stats is not None else delta_stats_table([]),
    }
    controls = [s for s in tt.delta.index if is_control(s)]
    if controls and len(controls) == len(tt.delta):
        out.notes.append("every source is a control; the PCA and attribution are fitted on them all")
        controls = []
    _traits(out, tt.delta, controls, task_types, settings, seed)
    fitted = tt.delta.drop(index=controls)
    src = {k: DatasetStats.from_dict(v) for k, v in source_stats.items()}
    tgt = {k: DatasetStats.from_dict(v) for k, v in target_stats.items()}
    sims = similarity_frames(src, tgt)
    out.tables |= {f"similarity_{name}": frame for name, frame in sims.items()}
    usable = {k: v for k, v in sims.items() if v.notna().to_numpy().any()}
    out.notes += [
        f"similarity '{k}' is unavailable for every pair and left out" for k in sims if k not in usable
    ]
    kw = {"include_diagonal": settings.include_diagonal}
    out.tables["attribution"] = attribute(fitted, usable, n_boot=settings.n_boot, seed=seed, **kw)
    out.tables["anomalies"] = anomalies(fitted, usable, top=settings.anomalies, **kw)
    lengths = behaviour.rename(columns={"mean_length": "value"})[["model", "target", "value"]]
    out.tables["length_shift"] = length_shift_table(tt.delta, lengths)
    out.tables["behaviour"] = behaviour
    out.tables["dataset_stats"] = dataset_stats_table(
        {**{f"{k} (train)": v for k, v in src.items()}, **{f"{k} (test)": v for k, v in tgt.items()}}
    )
    out.tables["controls"] = controls_table(tt.scores, tt.delta, sources)
    for s in (*src.values(), *tgt.values()):
        out.notes += [n for n in s.notes if n not in out.notes]
    return out


def is_control(source: str) -> bool:
    """A source trained on transformed data (mislabel, rebalance, subsample): its label carries "+"."""
    return task_of(source) != source


def delta_stats(results: Results, sources: list[str], targets: list[str], seed: int = 0) -> pd.DataFrame:
    """`tables/delta_stats.csv`: every cell's Δ = tuned − base as a paired comparison on the target's test
    rows (`studies.evidence.compare_jobs`: bootstrap CI, exact McNemar or paired permutation p; seeds then
    rows when a source has several training seeds), BH q over the whole table. Cells whose tuned or base
    evaluation has not finished are left out. metric: the target's metric (the per-row `correct` score)."""
    evals = _evals_by_cell(results)
    rows = []
    for source in sources:
        for target in targets:
            tuned, base = evals.get((source, target)), evals.get((BASE, target))
            if tuned and base:
                result = compare_jobs(results, tuned, base, seed=seed)
                metric = results.tasks[target].metric
                rows.append({"source": source, "target": target, "metric": metric, **result.as_dict()})
    return delta_stats_table(rows)


def _evals_by_cell(results: Results) -> dict[tuple[str, str], list]:
    """(model label, target) -> its finished evaluation jobs (one per training seed)."""
    evals: dict[tuple[str, str], list] = defaultdict(list)
    for job in results.finished("eval"):
        evals[job.params.label, job.params.target].append(job)
    return evals


def control_stats(results: Results, sources: list[str], targets: list[str], seed: int = 0) -> pd.DataFrame:
    """`tables/control_stats.csv`: each controlled source (label with "+") against its plain source on every
    target, paired on the same rows (seeds then rows, as `delta_stats`), BH q over this table: what the
    control changed, e.g. does a fully mislabelled source keep its transfer to other tasks? Columns as
    `delta_stats`' comparisons (a = the control, b = the plain source)."""
    evals = _evals_by_cell(results)
    rows = []
    for control in sources:
        plain = task_of(control)
        if control == plain or plain not in sources:
            continue
        for target in targets:
            a, b = evals.get((control, target)), evals.get((plain, target))
            if a and b:
                metric = results.tasks[target].metric
                rows.append(
                    comparison_row(control, plain, target, metric, compare_jobs(results, a, b, seed=seed))
                )
    return comparisons_table(rows)


def length_stats(results: Results, sources: list[str], targets: list[str], seed: int = 0) -> pd.DataFrame:
    """`tables/length_stats.csv`: on every target whose rows are generated (not chosen among labels), the
    generated length in tokens, per row, of each source's model minus the base model's (b = "base"), and of
    every two sources' models (methods.md §1: is a source's output length inherited?). Paired over the
    same rows, seeds then rows as `delta_stats` (`compare_scores`: bootstrap CI, sign-flip permutation p),
    BH q over this table. Columns as `delta_stats` with `metric` = "generated tokens"."""
    from spillover.analysis.behaviour import generated_text
    from spillover.data.stats import token_lengths
    from spillover.evaluation.predictions import read_predictions
    from spillover.models.load import load_tokenizer

    evals = _evals_by_cell(results)
    tokenizer, lengths = None, {}
    for (label, target), jobs in evals.items():
        per_seed = []
        for job in jobs:
            rows = read_predictions(results.job_dir(job) / PREDICTIONS)
            texts = [generated_text(r) for r in rows]
            if not rows or any(t is None for t in texts):
                break  # log-likelihood rows: a chosen label has no generated length
            tokenizer = tokenizer or load_tokenizer(results.spec.model)
            ids = pd.Index([str(r["id"]) for r in rows], name="id")
            per_seed.append(pd.Series(token_lengths(texts, tokenizer), index=ids, dtype=float))
        else:
            lengths[label, target] = per_seed
    rows = []
    for target in targets:
        models = [m for m in (BASE, *sources) if (m, target) in lengths]
        for i, a in enumerate(models):
            for b in models[:i] if a != BASE else ():
                result = compare_scores(lengths[a, target], lengths[b, target], seed=seed)
                rows.append(comparison_row(a, b, target, "generated tokens", result))
    return comparisons_table(rows)


def _traits(
    out: Analysis,
    delta: pd.DataFrame,
    controls: list[str],
    task_types: dict[str, str],
    settings: TransferAnalysisSpec,
    seed: int,
) -> None:
    """PCA fitted on the non-control rows of Δ (controls projected afterwards) and its permutation null."""
    pca = TransferPCA(settings.n_components, settings.standardize)
    projections = fit_held_out(pca, delta, controls)
    names = list(pca.loadings_.columns)
    out.tables["pca_variance"] = pd.DataFrame(
        {
            "explained_variance_ratio": pca.explained_variance_ratio_,
            "cumulative": pca.cumulative_variance_ratio_,
        },
        index=pd.Index(names, name="component"),
    )
    out.tables["pca_null"] = pca_null(
        delta.drop(index=controls),
        n_perm=settings.null_permutations,
        seed=seed,
        standardize=settings.standardize,
        n_components=settings.n_components,
    )
    out.tables["pca_loadings"] = pca.loadings_
    out.tables["pca_projections"] = projections.assign(control=[s in controls for s in projections.index])
    suggested = pca.suggest_labels(task_types)
    given = settings.component_labels
    out.extra = [given.get(n, s) for n, s in zip(names, suggested, strict=True)]
    out.tables["pca_labels"] = pd.DataFrame(
        {"suggested": suggested, "label": out.extra}, index=pd.Index(names, name="component")
    )


def dataset_stats_table(stats: dict[str, DatasetStats]) -> pd.DataFrame:
    """`tables/dataset_stats.csv`: one row per dataset (lengths, labels, which profiles exist, the syntax
    summary of `syntax_summary`; syntax columns empty where no parser was installed)."""
    rows = []
    for name, s in stats.items():
        lab = s.labels
        rows.append(
            {
                "dataset": name,
                "n": s.n_examples,
                "input_tokens_mean": s.input_length.mean,
                "input_tokens_median": s.input_length.median,
                "input_tokens_p90": s.input_length.p90,
                "output_tokens_mean": s.output_length.mean,
                "output_tokens_median": s.output_length.median,
                "output_tokens_p90": s.output_length.p90,
                "label_entropy_bits": lab.entropy_bits if lab else np.nan,
                "imbalance_ratio": lab.imbalance_ratio if lab and lab.imbalance_ratio is not None else np.nan,
                "labels": ", ".join(f"{k}: {v}" for k, v in lab.counts.items()) if lab else "",
                "semantic_profile": s.semantic is not None,
                "syntactic_profile": s.syntax is not None,
                **syntax_summary(s.syntax),
            }
        )
    return pd.DataFrame(rows).set_index("dataset")


def controls_table(matrix: pd.DataFrame, delta: pd.DataFrame, sources: list[str]) -> pd.DataFrame:
    """Each controlled source (label with "+") next to its plain source: in-task score, mean Δ elsewhere."""
    rows = []
    for s in sources:
        task = task_of(s)
        in_task = matrix.at[s, task] if task in matrix.columns else np.nan
        others = [t for t in delta.columns if t != task]
        rows.append(
            {
                "source": s,
                "task": task,
                "control": s[len(task) + 1 :] if "+" in s else "(none)",
                "in_task_score": in_task,
                "in_task_delta": delta.at[s, task] if task in delta.columns else np.nan,
                "mean_delta_other_targets": float(delta.loc[s, others].mean()) if others else np.nan,
            }
        )
    frame = pd.DataFrame(rows)
    controlled = set(frame.loc[frame["control"] != "(none)", "task"])
    return frame[frame["task"].isin(controlled)].reset_index(drop=True)


__all__ = ["BASE", "analyse", "analyse_transfer", "delta_stats", "is_control"]
