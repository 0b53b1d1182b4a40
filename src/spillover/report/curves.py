"""The evaluation-curves report section (`eval_every`; docs/training.md): per task, its score and its
validation loss against the optimiser step, one line per trained model; and the training-loss figure of a
`spillover train` report. Pure functions from tables to a `Section`.

The input is `eval_curves.csv`'s table (`evaluation.curves.COLUMNS`) with a `model` column naming the
trained run (a study has one per training job; `spillover train` one). Each task's figures show its own
metric (the first metric of its rows); every metric is in the table below them.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from spillover.report import plots
from spillover.report.html import Section
from spillover.report.style import esc

INTRO = (
    "Each eval task probed during training: its score on the held-out slice (the first eval limit test rows; "
    "error bars are 95% bootstrap intervals) and its validation loss (mean cross-entropy of the same rows' "
    "target tokens, nats) at step 0 (the starting weights), every eval_every optimiser steps and the last, "
    "one line per trained model. Probes are zero-shot. The points of one line are the same model at "
    "different steps on the same rows, so a rise or fall between two points is not tested here."
)


def curves_section(curves: pd.DataFrame, notes: list[str] | None = None) -> Section:
    """One section: per task a score figure and a validation-loss figure, and the whole table."""
    if curves.empty:
        return Section(
            "eval-curves", "Evaluation during training", notes=["no probes finished yet", *(notes or [])]
        )
    figures = []
    for task in dict.fromkeys(curves["task"]):
        part = curves[curves["task"] == task]
        figures += [score_figure(part, task), loss_figure(part, task)]
    table = curves.drop(columns=[c for c in ("n_loss_tokens",) if c in curves])
    return Section(
        "eval-curves",
        "Evaluation during training",
        INTRO,
        figures=figures,
        columns=2,
        tables=[("Probes (eval_curves.csv)", table)],
        notes=notes or [],
    )


def score_figure(part: pd.DataFrame, task: str) -> go.Figure:
    """One task's own metric against the step, per model, with its 95% CI as error bars."""
    metric = part["metric"].iloc[0]
    rows = part[part["metric"] == metric]
    fig = plots.lines(
        rows, "step", "value", color="model", title=f"{task}: {metric} vs step", ci=("ci_low", "ci_high")
    )
    fig.update_yaxes(title_text=esc(metric))
    return fig


def loss_figure(part: pd.DataFrame, task: str) -> go.Figure:
    """One task's validation loss against the step, per model (one value per step and model)."""
    rows = part.drop_duplicates(["model", "step"]).dropna(subset=["val_loss"])
    fig = plots.lines(rows, "step", "val_loss", color="model", title=f"{task}: validation loss vs step")
    fig.update_yaxes(title_text="validation loss (nats / target token)")
    return fig


def training_loss_section(log: pd.DataFrame) -> Section:
    """The training loss of each logged step (train_log.jsonl), for a `spillover train` report."""
    fig = plots.lines(log, "step", "loss", title="Training loss vs step")
    fig.update_yaxes(title_text="training loss (token mean of the step)")
    return Section("training-loss", "Training loss", figures=[fig])
