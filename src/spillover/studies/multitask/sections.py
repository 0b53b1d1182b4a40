"""The multitask study's report sections: methods compared, sequential forgetting, core regions, sweeps."""

from __future__ import annotations

import pandas as pd

from spillover.report import plots
from spillover.report.html import Section
from spillover.studies.contract import Analysis, Results
from spillover.studies.evidence import comparisons_section


def sections(a: Analysis, results: Results) -> list[Section]:
    """Methods compared; then, when there are rows for them, forgetting, core regions and the sweeps."""
    t = a.tables
    out = [_comparison(t, a.notes, list(results.spec.tasks)), comparisons_section(t["comparisons"], _PAIRED)]
    if not t["forgetting"].empty:
        out.append(_forgetting(t))
    if "jaccard" in t:
        out += [_cores(t), _sweep(t)]
    return out


def _comparison(t: dict[str, pd.DataFrame], notes: list[str], tasks: list[str]) -> Section:
    comp = t["comparison"]
    return Section(
        "comparison",
        "Methods compared",
        _COMPARISON_INTRO,
        notes=notes,
        columns=2,
        figures=[
            plots.heatmap(comp[tasks], "Score per task", diverging=False, x_title="task", y_title="model"),
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
            ("Behaviour per model and task (label prior shift, majority share, collapse)", t["behaviour"]),
        ],
    )


def _forgetting(t: dict[str, pd.DataFrame]) -> Section:
    return Section(
        "forgetting",
        "Sequential forgetting",
        _FORGETTING_INTRO,
        tables=[
            ("ΔA and ΔB per method (mean over ordered pairs)", t["forgetting_summary"]),
            ("Every ordered pair", t["forgetting"]),
        ],
    )


def _cores(t: dict[str, pd.DataFrame]) -> Section:
    return Section(
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
            ("Core overlap against chance (uniform and per-tensor random cores)", t["core_overlap"]),
            ("Core share per layer", t["core_by_layer"]),
            ("Core share per module type", t["core_by_module"]),
            ("Core density per module type (core elements / elements)", t["core_density_by_module"]),
        ],
    )


def _sweep(t: dict[str, pd.DataFrame]) -> Section:
    sweep = t["sweep_groups"]
    return Section(
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
    "share of the core; the density view divides by the module's size. The overlap table sets each pair's "
    "intersection against random cores of the same sizes: uniform over all parameters (chance Jaccard "
    "p/(2−p)) and per tensor (each task's per-tensor core counts kept, so sharing the same matrices is "
    "chance too); p is one-sided for more overlap than chance, q is Benjamini–Hochberg over the pairs."
)
_SWEEP_INTRO = (
    "The same core and grouping computation for every p and τ of the sweep, from the probes alone (no extra "
    "training; only the configured p and τ are trained with CPI-FT)."
)
_PAIRED = """Each method against the base model and CPI-FT against each baseline, per task; and for \
every sequential run A→B: ΔA (A after A→B vs A after A's own fine-tune), ΔB (B after A→B vs B after A) and \
CPI-FT vs SFT on A after A→B. Model labels as in the tables above (single:<task> is the task's \
fine-tune, seq:<method>:A>B the sequential run)."""
