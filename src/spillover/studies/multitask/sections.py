"""The multitask study's `analyse` job: gather scores, cores and runs; write tables/ and report.html."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from spillover.engine.plan import Job, Plan
from spillover.report import plots
from spillover.report.html import Section, render_report, write_report
from spillover.studies.multitask import SEQUENTIAL_METHODS
from spillover.studies.multitask_analysis import (
    comparison_table,
    forgetting_summary,
    forgetting_table,
    location_tables,
)
from spillover.studies.multitask_jobs import stage_plan
from spillover.studies.tables import write_tables
from spillover.studies.transfer import long_scores


def _stages(stages: list[list[str]]) -> str:
    return " → ".join("[" + ", ".join(s) + "]" for s in stages)


def gather(store, plan: Plan) -> tuple[pd.DataFrame, dict[str, Any] | None, list[dict], list[dict]]:
    """(scores of finished evals, the cores result or None, mt_train results, sequential results)."""
    done = {j["id"] for j in store.jobs() if j["status"] == "done"}
    ok = lambda kind: [j for j in plan.by_kind(kind) if j.id in done]  # noqa: E731
    scores = long_scores(store.scores([j.id for j in ok("eval")]))
    cores = next((store.result(j.id) for j in ok("cores")), None)
    return (
        scores,
        cores,
        [store.result(j.id) for j in ok("mt_train")],
        [store.result(j.id) for j in ok("sequential")],
    )


def build_tables(
    scores: pd.DataFrame, cores: dict | None, runs: list[dict], seq: list[dict], p: dict[str, Any]
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Every table of the study, and notes on what is missing."""
    tasks, tables, notes = p["tasks"], {}, []
    tables["comparison"] = comparison_table(scores, tasks, p["methods"])
    missing = [m for m in p["methods"] if m not in tables["comparison"].index]
    if missing:
        notes.append(f"methods without scores (failed or not run yet): {', '.join(missing)}")
    tables["forgetting"] = forgetting_table(scores, p["orders"], SEQUENTIAL_METHODS)
    tables["forgetting_summary"] = forgetting_summary(tables["forgetting"])
    tables["runs"] = pd.DataFrame([_run_row(r) for r in [*runs, *seq]])
    if cores is None:
        notes.append("the core-region job did not finish: no Jaccard matrix, groups or sweep")
        return tables, notes
    tables["jaccard"] = pd.DataFrame(cores["jaccard"], index=cores["tasks"], columns=cores["tasks"])
    groups, stages = stage_plan(cores["jaccard"], cores["tasks"], p["cpi"]["tau"], p["seed"])
    tables["groups"] = pd.DataFrame(
        [
            {"what": f"groups (τ = {p['cpi']['tau']:g})", "value": _stages(groups)},
            *({"what": f"stages ({o})", "value": _stages(s)} for o, s in stages.items()),
        ]
    )
    tables["core_sizes"] = pd.DataFrame(
        [
            {"task": t, "n_core": n, "share_of_params": n / cores["n_params"]}
            for t, n in cores["core_sizes"].items()
        ]
    )
    tables["core_location"] = pd.DataFrame(cores["location"])
    tables |= location_tables(cores["location"])
    tables["sweep_groups"] = pd.DataFrame(cores["sweep"]["groups"])
    tables["sweep_jaccard"] = pd.DataFrame(cores["sweep"]["pairs"])
    return tables, notes


def _run_row(r: dict[str, Any]) -> dict[str, Any]:
    label = r["method"] if "first" not in r else f"seq:{r['method']}:{r['first']}>{r['second']}"
    fusion = r.get("fusion") or {}
    return {
        "run": label,
        "stages": _stages(r["stages"]) if "stages" in r else f"[{r['first']}] → [{r['second']}]",
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


def analyse_job(ctx, plan: Plan, job: Job) -> dict[str, Any]:
    """Runs over whatever finished (missing methods are named in a note)."""
    scores, cores, runs, seq = gather(ctx.store, plan)
    tables, notes = build_tables(scores, cores, runs, seq, job.params)
    out = Path(ctx.spec.output_dir)
    names = write_tables(tables, out / "tables")
    html = render_report(
        f"Multitask study (CPI-FT): {ctx.spec.model}",
        sections(tables, notes, job.params),
        ctx.spec.model_dump(mode="json"),
        footer=f"{len(scores)} scores",
    )
    write_report(out / "report.html", html)
    return {"tables": names, "report": str(out / "report.html"), "notes": notes}


def sections(t: dict[str, pd.DataFrame], notes: list[str], p: dict[str, Any]) -> list[Section]:
    tasks = p["tasks"]
    comp = t["comparison"]
    out = [
        Section(
            "comparison",
            "Methods compared",
            _COMPARISON_INTRO,
            notes=notes,
            columns=2,
            figures=[
                plots.heatmap(
                    comp[tasks], "Score per task", diverging=False, x_title="task", y_title="model"
                ),
                plots.bars(
                    comp.reset_index(),
                    "model",
                    "normalised_average",
                    title="Normalised average (1 = single-task fine-tune)",
                ),
            ],
            tables=[
                ("Scores, mean, normalised scores and normalised average", comp),
                ("Training runs", t["runs"]),
            ],
        )
    ]
    if not t["forgetting"].empty:
        out.append(
            Section(
                "forgetting",
                "Sequential forgetting",
                _FORGETTING_INTRO,
                tables=[
                    ("ΔA and ΔB per method (mean over ordered pairs)", t["forgetting_summary"]),
                    ("Every ordered pair", t["forgetting"]),
                ],
            )
        )
    if "jaccard" in t:
        out.append(
            Section(
                "cores",
                "Core regions and grouping",
                _CORES_INTRO,
                columns=2,
                figures=[
                    plots.heatmap(t["jaccard"], "Jaccard of core regions", diverging=False, fmt=".3f"),
                    plots.heatmap(
                        t["core_by_layer"],
                        "Share of each task's core per layer",
                        diverging=False,
                        x_title="layer",
                        y_title="task",
                    ),
                    plots.heatmap(
                        t["core_by_module"],
                        "Share of each task's core per module",
                        diverging=False,
                        x_title="module",
                        y_title="task",
                    ),
                ],
                tables=[
                    ("Groups and stage orders", t["groups"]),
                    ("Core sizes", t["core_sizes"]),
                    ("Jaccard matrix", t["jaccard"]),
                    ("Core share per layer", t["core_by_layer"]),
                    ("Core share per module type", t["core_by_module"]),
                    ("Core density per module type (core elements / elements)", t["core_density_by_module"]),
                ],
            )
        )
        sweep = t["sweep_groups"]
        out.append(
            Section(
                "sweep",
                "Sweeps over p and τ",
                _SWEEP_INTRO,
                columns=2,
                figures=[
                    plots.lines(
                        t["sweep_jaccard"].assign(pair=lambda f: f["task_a"] + " / " + f["task_b"]),
                        "p",
                        "jaccard",
                        color="pair",
                        title="Jaccard vs core fraction p (%)",
                        log_x=True,
                    ),
                    plots.heatmap(
                        sweep.pivot(index="p", columns="tau", values="n_groups"),
                        "Number of groups per (p, τ)",
                        diverging=False,
                        fmt=".0f",
                        x_title="τ",
                        y_title="p (%)",
                    ),
                ],
                tables=[("Groups per (p, τ)", sweep), ("Jaccard per p and pair", t["sweep_jaccard"])],
            )
        )
    return out


_COMPARISON_INTRO = (
    "Every model on every task: the base model, each single-task fine-tune (single:<task>, the probes of "
    "CPI-FT), joint multi-task SFT, multi-stage SFT in random and heuristic stage order, and CPI-FT. "
    "norm/<task> = score / single-task score on that task (1 = as good as the task's own fine-tune); the "
    "normalised average is their mean over tasks. Training runs list each method's stages, steps and time."
)
_FORGETTING_INTRO = (
    "Train A, then B, starting the B stage from A's single-task fine-tune. sft: plain fine-tuning on B "
    "(sequential and multi-stage SFT coincide for two single-task stages); cpi: the same with A's core region "
    "frozen exactly. ΔA = A after A→B − A after A (negative = forgetting); ΔB = B after A→B − B after A."
)
_CORES_INTRO = (
    "A task's core region is the top-p% of parameters by update magnitude |θ_task − θ0| of its single-task "
    "fine-tune. Tasks are linked when the Jaccard similarity of their cores is ≥ τ; groups are the connected "
    "components, ordered into stages. The layer and module views show where each task's core lies, as a "
    "share of the core; the density view divides by the module's size."
)
_SWEEP_INTRO = (
    "The same core and grouping computation for every p and τ of the sweep, from the probes alone (no extra "
    "training; only the configured p and τ are trained with CPI-FT)."
)
