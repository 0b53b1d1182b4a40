"""The multitask study's analysis (methods.md §3.5–3.7): pure functions from the finished jobs' results
(scores, core regions, training runs) to tables; `analyse` is the study's entry point.

Definitions (also in docs/multitask.md):
- **Normalised score** of a model on task i: score_i / single_i, where single_i is the score on task i of
  the single-task fine-tune on task i (the probe). 1.0 = as good as the task's own specialist. NaN when
  single_i is 0. The **normalised average** of a method is the mean over tasks of its normalised scores.
- **Sequential forgetting** (train A, then B): ΔA = A(after A→B) − A(after A) (negative = forgetting),
  ΔB = B(after A→B) − B(after A) (learning during the B stage). "After A" is A's probe.
- **Paired comparisons** (`comparisons`): each method vs the base model and CPI-FT vs each baseline per
  task; per sequential method and ordered pair (A, B): ΔA (A after A→B vs A after A), ΔB (B after A→B vs B
  after A) and CPI-FT vs SFT on A after A→B — each on the same test rows (q: Benjamini–Hochberg over the table).
- **Where the cores live**: core elements per layer and per module type (the parameter name without the
  layer prefix, `.weight`/`.bias` and the LoRA adapter name), as counts and as the share of the task's core.
- **Core overlap against chance** (`core_overlap`): per task pair the observed intersection |C_a ∩ C_b| and
  two null expectations for cores of the same sizes drawn at random — *uniform* over all N elements (the
  intersection is hypergeometric; the chance Jaccard is p/(2−p) when both cores hold a share p), and
  *per tensor* (random positions inside each parameter tensor, keeping each task's per-tensor core counts,
  so overlap explained by both cores living in the same matrices is chance too; a sum of independent
  hypergeometrics, tested with its normal approximation). One-sided p for "more overlap than chance",
  q = Benjamini–Hochberg over the pairs, per null.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import Tensor

from spillover.analysis.paired import bh_qvalues, comparisons_table
from spillover.engine.plan import Job
from spillover.studies.contract import BASE, Analysis, Results
from spillover.studies.evidence import behaviour_table, compare_jobs, comparison_row
from spillover.studies.multitask.plan import MultitaskAnalyseJob
from spillover.studies.multitask.spec import SEQUENTIAL_METHODS, seq_label, single_label
from spillover.training.cpi import stage_plan
from spillover.training.masks import IndexMask, mask_size
from spillover.training.stages import group_tasks, jaccard_matrix

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.(.+)$")


def module_of(name: str) -> tuple[int | None, str]:
    """(layer index or None, module type) of a parameter name:
    `model.layers.3.self_attn.q_proj.weight` → (3, "self_attn.q_proj");
    `base_model.model.model.layers.0.mlp.up_proj.lora_A.default.weight` → (0, "mlp.up_proj.lora_A");
    `model.embed_tokens.weight` → (None, "embed_tokens")."""
    name = re.sub(r"\.(weight|bias)$", "", name).replace(".default", "")
    found = _LAYER.search(name)
    if found:
        return int(found.group(1)), found.group(2)
    return None, name.removeprefix("base_model.model.").removeprefix("model.")


def core_location_rows(
    masks: Mapping[str, Mapping[str, Tensor]], init: Mapping[str, Tensor | torch.Size]
) -> list[dict]:
    """Per task and parameter tensor: layer, module, core elements (possibly 0), tensor size. `masks`: per
    task a mask (`training.masks`: boolean tensors or an `IndexMask`); `init`: per name the tensor or its
    shape."""
    rows = []
    for task, mask in masks.items():
        counts = IndexMask.from_mask(mask).indices
        for name in mask:
            layer, module = module_of(name)
            rows.append(
                {
                    "task": task,
                    "parameter": name,
                    "layer": layer,
                    "module": module,
                    "n_core": int(counts[name].numel()) if name in counts else 0,
                    "n_elements": int(init[name].numel()),
                }
            )
    return rows


def location_tables(rows: list[dict]) -> dict[str, pd.DataFrame]:
    """`core_by_layer` and `core_by_module`: task × layer/module share of the task's core (0..1)."""
    frame = pd.DataFrame(rows)
    if frame.empty:
        return {}
    frame["layer"] = frame["layer"].map(lambda v: "other" if pd.isna(v) else str(int(v)))
    total = frame.groupby("task")["n_core"].transform("sum")
    frame["share"] = frame["n_core"] / total
    by_layer = frame.pivot_table(index="task", columns="layer", values="share", aggfunc="sum", fill_value=0.0)
    by_layer = by_layer.reindex(
        columns=sorted(by_layer.columns, key=lambda c: (c == "other", int(c) if c != "other" else 0))
    )
    by_module = frame.pivot_table(
        index="task", columns="module", values="share", aggfunc="sum", fill_value=0.0
    )
    sums = frame.groupby(["task", "module"])[["n_core", "n_elements"]].sum()
    by_module_density = (sums["n_core"] / sums["n_elements"]).unstack()
    return {
        "core_by_layer": by_layer,
        "core_by_module": by_module,
        "core_density_by_module": by_module_density,
    }


def sweep_rows(
    cores: Mapping[float, Sequence[Mapping[str, Tensor]]], taus: Sequence[float], tasks: Sequence[str]
) -> dict[str, list[dict]]:
    """Jaccard and groups for every (p, τ), from the probes' cores at every p (`cores[p]`: one mask per
    task, in `tasks` order; `training.masks.top_p_mask` / `top_p_indices` of the update magnitudes).
    `pairs`: one row per p and task pair; `groups`: one row per (p, τ)."""
    pairs, groups = [], []
    for p, masks in cores.items():
        sim = jaccard_matrix(masks)
        size = float(np.mean([mask_size(m) for m in masks]))
        for i in range(len(tasks)):
            for j in range(i + 1, len(tasks)):
                pairs.append({"p": p, "task_a": tasks[i], "task_b": tasks[j], "jaccard": float(sim[i, j])})
        off = sim[~np.eye(len(tasks), dtype=bool)]
        for tau in taus:
            found = group_tasks(sim, tau)
            groups.append(
                {
                    "p": p,
                    "tau": tau,
                    "n_groups": len(found),
                    "core_size": size,
                    "mean_jaccard": float(off.mean()),
                    "max_jaccard": float(off.max()),
                    "groups": " | ".join(", ".join(tasks[i] for i in g) for g in found),
                }
            )
    return {"pairs": pairs, "groups": groups}


def score_matrix(scores: pd.DataFrame, order: Sequence[str], tasks: Sequence[str]) -> pd.DataFrame:
    """model × task score matrix (rows in `order`, those present only)."""
    m = scores.pivot_table(index="model", columns="target", values="value", aggfunc="first")
    return m.reindex(index=[o for o in order if o in m.index], columns=list(tasks))


def comparison_table(scores: pd.DataFrame, tasks: Sequence[str], methods: Sequence[str]) -> pd.DataFrame:
    """Per model (base, each single-task fine-tune, each method): per-task scores, the raw mean, per-task
    normalised scores (`norm/<task>`) and the normalised average (see the module doc)."""
    single = {t: single_label(t) for t in tasks}
    m = score_matrix(scores, [BASE, *single.values(), *methods], tasks)
    ref = pd.Series({t: m.at[single[t], t] if single[t] in m.index else np.nan for t in tasks})
    ref = ref.where(ref != 0)
    out = m.copy()
    out["mean"] = m.mean(axis=1)
    norm = m.divide(ref, axis=1)
    for t in tasks:
        out[f"norm/{t}"] = norm[t]
    out["normalised_average"] = norm.mean(axis=1, skipna=False)
    out.index.name = "model"
    return out


def forgetting_table(
    scores: pd.DataFrame, orders: Sequence[Sequence[str]], methods: Sequence[str]
) -> pd.DataFrame:
    """One row per (method, A, B): base and after-A scores of A and B, the final scores, ΔA and ΔB."""
    v = {(r.model, r.target): r.value for r in scores.itertuples()}
    rows = []
    for a, b in orders:
        after = single_label(a)
        for method in methods:
            label = seq_label(method, a, b)
            if (label, a) not in v:
                continue
            row = {
                "method": method,
                "A": a,
                "B": b,
                "A_base": v.get((BASE, a)),
                "B_base": v.get((BASE, b)),
                "A_after_A": v.get((after, a)),
                "B_after_A": v.get((after, b)),
                "A_final": v.get((label, a)),
                "B_final": v.get((label, b)),
                "B_single": v.get((single_label(b), b)),
            }
            row["delta_A"] = _diff(row["A_final"], row["A_after_A"])
            row["delta_B"] = _diff(row["B_final"], row["B_after_A"])
            rows.append(row)
    return pd.DataFrame(rows)


def forgetting_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean ΔA and ΔB per method over every ordered pair."""
    if table.empty:
        return table
    return table.groupby("method", sort=False)[["delta_A", "delta_B"]].mean()


def _diff(a: Any, b: Any) -> float:
    return float(a) - float(b) if a is not None and b is not None else float("nan")


def analyse(results: Results, p: MultitaskAnalyseJob) -> Analysis:
    """Every table of the study from whatever finished (missing methods and cores are named in notes)."""
    scores = results.long_scores(results.finished("eval"))
    scores = scores[scores["metric"] == scores["target"].map(lambda t: results.tasks[t].metric)]  # own metric
    cores = next((results.result(j) for j in results.finished("cores")), None)
    runs = [results.result(j) for kind in ("mt_train", "sequential") for j in results.finished(kind)]
    tables, notes = {}, []
    tables["comparison"] = comparison_table(scores, p.tasks, p.methods)
    missing = [m for m in p.methods if m not in tables["comparison"].index]
    if missing:
        notes.append(f"methods without scores (failed or not run yet): {', '.join(missing)}")
    tables["forgetting"] = forgetting_table(scores, p.orders, SEQUENTIAL_METHODS)
    tables["forgetting_summary"] = forgetting_summary(tables["forgetting"])
    tables["runs"] = pd.DataFrame([run_row(r) for r in runs])
    tables["comparisons"] = comparisons(results, p)
    tables["behaviour"] = behaviour_table(results, results.finished("eval"))
    if cores is None:
        notes.append("the core-region job did not finish: no Jaccard matrix, groups or sweep")
    else:
        tables |= core_tables(cores, p.cpi.tau, p.seed)
    return Analysis(tables, notes, footer=f"{len(scores)} scores")


def overlap_rows(cores: Mapping[str, Any]) -> list[dict]:
    """`core_overlap`: per task pair the observed core intersection against the uniform and the per-tensor
    random-subset null (module doc). `cores`: the cores job's result (tasks, jaccard, core_sizes, n_params,
    location). The intersection is recovered exactly from the Jaccard J and the sizes: I = J (k_a + k_b) / (1 + J)."""
    tasks, n = cores["tasks"], int(cores["n_params"])
    location = pd.DataFrame(cores["location"])
    per_tensor = location.pivot_table(
        index="parameter", columns="task", values="n_core", aggfunc="sum", fill_value=0
    )
    # per tensor t: the intersection is hypergeometric (population N_t, k_at successes, k_bt draws)
    nt = location.groupby("parameter")["n_elements"].first().reindex(per_tensor.index).to_numpy(dtype=float)
    rows = []
    for i, a in enumerate(tasks):
        for j in range(i + 1, len(tasks)):
            b = tasks[j]
            ka, kb, jac = (
                int(cores["core_sizes"][a]),
                int(cores["core_sizes"][b]),
                float(cores["jaccard"][i][j]),
            )
            inter = round(jac * (ka + kb) / (1.0 + jac))
            mean_u = ka * kb / n
            at, bt = per_tensor[a].to_numpy(dtype=float), per_tensor[b].to_numpy(dtype=float)
            mean_t = float(np.sum(at * bt / nt))
            var_t = float(np.sum(at * bt * (nt - at) * (nt - bt) / (nt**2 * np.maximum(nt - 1, 1))))
            z = (inter - mean_t) / np.sqrt(var_t) if var_t else float("nan")
            rows.append(
                {
                    "task_a": a,
                    "task_b": b,
                    "core_a": ka,
                    "core_b": kb,
                    "intersection": inter,
                    "jaccard": jac,
                    "chance_jaccard_uniform": mean_u / (ka + kb - mean_u),
                    "ratio_uniform": inter / mean_u if mean_u else float("nan"),
                    "p_uniform": float(stats.hypergeom.sf(inter - 1, n, ka, kb)),
                    "chance_jaccard_per_tensor": mean_t / (ka + kb - mean_t),
                    "ratio_per_tensor": inter / mean_t if mean_t else float("nan"),
                    "z_per_tensor": z,
                    "p_per_tensor": float(stats.norm.sf(z)) if var_t else 1.0,
                }
            )
    for null in ("uniform", "per_tensor"):
        q = bh_qvalues([r[f"p_{null}"] for r in rows]) if rows else []
        for r, value in zip(rows, q, strict=True):
            r[f"q_{null}"] = float(value)
    return rows


def comparison_pairs(
    tasks: Sequence[str], methods: Sequence[str], orders: Sequence[Sequence[str]]
) -> list[tuple[str, str, str]]:
    """(a, b, target) model-label pairs of the `comparisons` table (see the module doc)."""
    pairs = [(m, BASE, t) for m in methods for t in tasks]
    pairs += [("cpi", m, t) for m in methods if m != "cpi" and "cpi" in methods for t in tasks]
    for a, b in orders:
        for m in SEQUENTIAL_METHODS:
            pairs += [(seq_label(m, a, b), single_label(a), a), (seq_label(m, a, b), single_label(a), b)]
        pairs.append((seq_label("cpi", a, b), seq_label("sft", a, b), a))
    return pairs


def comparisons(results: Results, p: MultitaskAnalyseJob) -> pd.DataFrame:
    """`tables/comparisons.csv`: every pair of `comparison_pairs` whose evaluations both finished."""
    jobs: dict[tuple[str, str], list[Job]] = {}
    for j in results.finished("eval"):
        jobs.setdefault((j.params.label, j.params.target), []).append(j)
    rows = [
        comparison_row(a, b, t, results.tasks[t].metric, compare_jobs(results, jobs[(a, t)], jobs[(b, t)]))
        for a, b, t in comparison_pairs(p.tasks, p.methods, p.orders)
        if (a, t) in jobs and (b, t) in jobs
    ]
    return comparisons_table(rows)


def core_tables(cores: dict[str, Any], tau: float, seed: int) -> dict[str, pd.DataFrame]:
    """The cores job's result as tables: Jaccard, groups and stage orders at τ, sizes, location, sweep."""
    tasks = cores["tasks"]
    plan = stage_plan(cores["jaccard"], tasks, tau, seed)
    groups = [
        {"what": f"groups (τ = {tau:g})", "value": stages_text(plan.groups)},
        *({"what": f"stages ({o})", "value": stages_text(s)} for o, s in plan.orders.items()),
    ]
    sizes = [
        {"task": t, "n_core": n, "share_of_params": n / cores["n_params"]}
        for t, n in cores["core_sizes"].items()
    ]
    return {
        "jaccard": pd.DataFrame(cores["jaccard"], index=tasks, columns=tasks),
        "core_overlap": pd.DataFrame(overlap_rows(cores)),
        "groups": pd.DataFrame(groups),
        "core_sizes": pd.DataFrame(sizes),
        "core_location": pd.DataFrame(cores["location"]),
        **location_tables(cores["location"]),
        "sweep_groups": pd.DataFrame(cores["sweep"]["groups"]),
        "sweep_jaccard": pd.DataFrame(cores["sweep"]["pairs"]),
    }


def stages_text(stages: list[list[str]]) -> str:
    """[[a, b], [c]] → "[a, b] → [c]"."""
    return " → ".join("[" + ", ".join(s) + "]" for s in stages)


def run_row(r: dict[str, Any]) -> dict[str, Any]:
    """One row of the `runs` table from an mt_train or sequential job's result."""
    label = r["method"] if "first" not in r else seq_label(r["method"], r["first"], r["second"])
    fusion = r.get("fusion") or {}
    return {
        "run": label,
        "stages": stages_text(r["stages"]) if "stages" in r else f"[{r['first']}] → [{r['second']}]",
        "n_steps": r["n_steps"],
        "seconds": round(r["seconds"], 1),
        "final_loss": r["final_loss"],
        "frozen_elements": r.get(
            "frozen", max((s.get("frozen", 0) for s in r.get("stage_runs", [])), default=0)
        ),
        "fusion_tensors_slerp": fusion.get("tensors_slerp"),
        "fusion_tensors_lerp": fusion.get("tensors_lerp"),
        "fusion_collisions": fusion.get("collisions"),
    }
