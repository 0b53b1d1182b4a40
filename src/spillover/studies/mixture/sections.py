"""The mixture study's report sections: score curves with degradation marks, final scores against ratios,
the de-facto main task, and behaviour."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from spillover.report import plots
from spillover.report.html import Section
from spillover.report.style import esc
from spillover.studies.contract import BASE, Analysis, Results
from spillover.studies.evidence import comparisons_section


def sections(a: Analysis, results: Results) -> list[Section]:
    return mixture_sections(a)


def mixture_sections(a: Analysis) -> list[Section]:
    t = a.tables
    if "curves" not in t:
        return [Section("empty", "No results yet", notes=a.notes)]
    return [
        Section(
            "curves",
            "Score over training steps",
            _CURVES_INTRO,
            columns=2,
            notes=a.notes,
            figures=[curve_figure(t["curves"], task) for task in t["curves"]["task"].unique()],
            tables=[("Degradation per mixture and task", t["degradation"])],
        ),
        Section(
            "final",
            "Final scores",
            _FINAL_INTRO,
            columns=2,
            figures=[
                plots.heatmap(
                    t["final_scores"],
                    "Final score (base row first)",
                    diverging=False,
                    x_title="task",
                    y_title="mixture",
                ),
                ratio_figure(t["final"]),
            ],
            tables=[
                ("Final scores", t["final_scores"]),
                ("Final scores with CI and ratio", t["final"]),
                ("Configured ratios (run average)", t["ratios"]),
                ("Sequences drawn per task", t["plans"]),
            ],
        ),
        comparisons_section(t["comparisons"], _PAIRED_INTRO, "probe comparisons"),
        *_ratio_model_sections(t),
        Section(
            "main", "The de-facto main task", _MAIN_INTRO, tables=[("Main task per mixture", t["main_task"])]
        ),
        Section(
            "behaviour",
            "Behaviour",
            _BEHAVIOUR_INTRO,
            columns=2,
            figures=[
                _behaviour_heatmap(t["behaviour_final"], "mean_length", "Mean output length (tokens)"),
                _behaviour_heatmap(t["behaviour_final"], "format_fail_rate", "Not in the expected format"),
                _behaviour_heatmap(t["behaviour_final"], "hedge_rate", "Hedging / refusal rate"),
                _behaviour_heatmap(t["behaviour_final"], "prior_shift", "Label prior shift (TV from gold)"),
            ],
            tables=[
                ("Behaviour at the final checkpoint", t["behaviour_final"]),
                ("Behaviour at every checkpoint", t["behaviour"]),
            ],
        ),
    ]


def curve_figure(curves: pd.DataFrame, task: str) -> go.Figure:
    """One task: score vs step per mixture with its 95% CI as error bars; ✕ where it has degraded."""
    part = curves[curves["task"] == task]
    fig = plots.lines(
        part, "step", "value", color="mixture", title=f"{task}: score vs step", ci=("ci_low", "ci_high")
    )
    hit = part[part["degraded"]]
    if len(hit):
        fig.add_scatter(
            x=hit["step"],
            y=hit["value"],
            mode="markers",
            name="degraded",
            marker=dict(symbol="x", size=13, color="#cf222e", line=dict(width=2)),
            hovertext=[esc(m) for m in hit["mixture"]],
            hovertemplate="%{hovertext}: degraded at step %{x}<extra></extra>",
        )
    return fig


def ratio_figure(final: pd.DataFrame) -> go.Figure:
    """Final score against the task's run-average ratio, one colour per task, points labelled by mixture."""
    frame = final.dropna(subset=["mean_ratio"])
    return plots.scatter(
        frame,
        "mean_ratio",
        "value",
        text="mixture",
        color="task",
        trendline=False,
        title="Final score vs the task's ratio",
    )


def _behaviour_heatmap(frame: pd.DataFrame, column: str, title: str) -> go.Figure:
    values = frame.pivot(index="mixture", columns="task", values=column).astype(float)
    order = [m for m in dict.fromkeys(frame["mixture"]) if m in values.index]
    return plots.heatmap(
        values.reindex(order), title, diverging=False, fmt=".2f", x_title="task", y_title="mixture"
    )


_CURVES_INTRO = (
    "Each task's score on its held-out slice (the first eval.limit test rows) at every probed checkpoint, one "
    "line per mixture; step 0 is the untuned base model. Error bars are 95% bootstrap intervals. A red ✕ marks "
    "a degraded checkpoint: significantly worse than the base model at step 0 in a paired test on the same "
    "probe rows (Benjamini–Hochberg q < 0.05; see Paired comparisons). A task is minor in a mixture when its "
    "run-average ratio is below the equal share 1/K."
)
_PAIRED_INTRO = (
    "Every checkpoint's probe of a task against the base model's probe (step 0) and against the previous "
    "checkpoint's probe, on the same probe rows. Rows 'mixture · step s − base · step 0' are the degradation "
    "test: the first checkpoint significantly below step 0 is the task's degradation point. Rows between two "
    "mixtures' last checkpoints compare the mixtures themselves (e.g. a schedule against a fixed ratio)."
)
_FINAL_INTRO = (
    "Scores at the last checkpoint of every mixture, with the base model's row first, and each task's final "
    "score against its run-average ratio in each mixture (schedules enter with their average ratio)."
)
_MAIN_INTRO = (
    "Which task did each mixture turn the model into? main_task_by_style is the training task whose outputs "
    "the model's outputs resemble most (character 3-gram + function-word style), counted over the tasks it "
    "was probed on at the last checkpoint; it is shown next to the task with the largest gain over base and "
    f"the task with the largest ratio. The '{BASE}' model is not a mixture and has no row."
)
_BEHAVIOUR_INTRO = (
    "Beyond the score: output length (for classification, of the free generation on the same prompt), hedging "
    "or refusal rate (configurable phrases), the share of outputs not in the task's expected format (a label "
    "first, an extractable answer), the predicted-label prior shift, and the style similarity to each training "
    "task's outputs (style/<task> columns; sounds_like = the most similar)."
)


_RATIO_INTRO = (
    "A per-task ridge regression of the final score on the mixture's run-average ratios (each ratio and "
    "its log; RegMix-style, docs/mixture.md). Leave one mixture out: each mixture's scores predicted from "
    "the others, and per task the rank correlation of predicted with measured scores — fitted on the other "
    "mixtures' final scores, and on their scores at each earlier probe step (a short proxy run: does a "
    "run cut short rank the held-out mixture as its full run does?). Proposed ratios: the "
    "grid vectors with the highest mean predicted score among those with no task predicted more than "
    "recommend.epsilon below the base model. With a handful of mixtures this is an extrapolation to check, "
    "not a result: train the proposed mixture before relying on it; schedules enter with their average ratios."
)


def _ratio_model_sections(t: dict) -> list[Section]:
    if "mixture_prediction" not in t:
        return []
    tables = [
        ("Held-out mixtures: rank correlation per task", t["mixture_prediction_summary"]),
        ("Held-out mixtures: predicted and measured final scores", t["mixture_prediction"]),
    ]
    if "mixture_recommendation" in t:
        tables.append(("Proposed ratios (predicted)", t["mixture_recommendation"]))
    return [
        Section("ratio-model", "Score vs ratio: prediction and proposed ratios", _RATIO_INTRO, tables=tables)
    ]
