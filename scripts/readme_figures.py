#!/usr/bin/env python3
"""Render the README's quick-start figures from a quick-start run's tables, so they cannot drift.

The figures live in README.md between ``<!-- quickstart-figures:begin … -->`` and
``<!-- quickstart-figures:end -->``; everything inside is generated from ``RUN_DIR/tables``:

* ``delta_stats.csv`` (source, target, metric, delta, ci_low, ci_high, p, q, significant, n, seeds): how
  many Δ cells are significant (Benjamini–Hochberg q < 0.05) and every cell of the source × target
  matrix in points, a significant one with its paired 95% CI and q, the rest as "not significant at
  n = …" (the project's evidence standard: no bare difference);
* ``behaviour.csv`` (model, target, majority_share, collapsed, …): which models answer one label on
  most of a target's rows (majority collapse);
* ``scores.csv`` (model, target, metric, value, n, ci_low, ci_high): each source's in-task score, base →
  tuned, in the target's metric and in balanced accuracy where it was scored;
* ``pca_null.csv`` (component, explained, null_p95, above_null): which principal components of Δ are
  above their permutation null.

Prose that reads the figures stays outside the markers. Number formats: Δ and CIs in points with one
decimal and a sign; q with three decimals below 0.1 (two above), "< 0.001" below that; scores with three
decimals; shares of variance and of rows in whole percent.

Usage::

    python scripts/readme_figures.py runs/quickstart            # print the block
    python scripts/readme_figures.py runs/quickstart --write    # replace it in README.md
    python scripts/readme_figures.py runs/quickstart --check    # exit 1 with a diff if README.md differs
"""

from __future__ import annotations

import argparse
import difflib
import math
import sys
import textwrap
from pathlib import Path

import pandas as pd

from spillover.analysis.transfer import BASE, task_of

REPO_ROOT = Path(__file__).resolve().parent.parent
BEGIN_TAG = "<!-- quickstart-figures:begin"
BEGIN = f"{BEGIN_TAG} (scripts/readme_figures.py RUN_DIR --write; do not edit by hand) -->"
END = "<!-- quickstart-figures:end -->"
WIDTH = 110  # the README's line length
SECONDARY = "balanced_accuracy"  # reported beside a classification target's own metric


def points(x: float) -> str:
    """A difference on a 0–1 scale in signed points with one decimal: 0.125 -> "+12.5", −0.2 -> "−20.0"."""
    text = f"{x * 100:+.1f}"
    return "0.0" if float(text) == 0 else text.replace("-", "−")


def q_value(q: float) -> str:
    """q as the README gives it: "q = 0.048", "q = 0.007", "q < 0.001", "q = 0.42". Three decimals below
    0.1, so a significant q (< 0.05) never prints as "q = 0.05"."""
    if q < 0.001:
        return "q < 0.001"
    return f"q = {q:.3f}" if q < 0.1 else f"q = {q:.2f}"


def flags(column: pd.Series) -> pd.Series:
    """A True/False column as read from CSV (bool, or strings when it has gaps) -> bool."""
    return column.astype(str).str.lower() == "true"


def score(value: float, low: float, high: float) -> str:
    """A score with its 95% CI when it has one: "0.733 [0.650, 0.808]"."""
    ci = "" if math.isnan(low) or math.isnan(high) else f" [{low:.3f}, {high:.3f}]"
    return f"{value:.3f}{ci}"


def cell(row: pd.Series) -> str:
    """One Δ cell: "+12.5 [+4.2, +21.7], q = 0.02" or "+5.0, not significant at n = 120"."""
    if row["significant"]:  # already a bool (`delta_lines`)
        ci = f"[{points(row['ci_low'])}, {points(row['ci_high'])}]"
        return f"{points(row['delta'])} {ci}, {q_value(row['q'])}"
    return f"{points(row['delta'])}, not significant at n = {int(row['n'])}"


def count_range(values: pd.Series, unit: str) -> str:
    """ "120 test rows" or "100–120 test rows"."""
    lo, hi = int(values.min()), int(values.max())
    return f"{lo} {unit}" if lo == hi else f"{lo}–{hi} {unit}"


def delta_lines(stats: pd.DataFrame) -> list[str]:
    """The headline count and the source × target matrix of Δ cells (sources and targets in table order)."""
    sig = flags(stats["significant"])
    seeds = count_range(stats["seeds"], "training seed" + ("" if stats["seeds"].max() == 1 else "s"))
    head = (
        f"{int(sig.sum())} of the {len(stats)} Δ cells are significant (Benjamini–Hochberg q < 0.05); "
        f"{seeds}, {count_range(stats['n'], 'test rows')} per target. Δ is tuned minus base in points of the "
        "target's metric, with its paired 95% CI (`delta_stats.csv`):"
    )
    sources = list(dict.fromkeys(stats["source"]))
    targets = list(dict.fromkeys(stats["target"]))
    cells = {(r["source"], r["target"]): cell(r) for _, r in stats.assign(significant=sig).iterrows()}
    table = [
        "| tuned on ↓ / evaluated on → | " + " | ".join(targets) + " |",
        "| --- |" + " --- |" * len(targets),
    ]
    for s in sources:
        table.append(f"| {s} | " + " | ".join(cells.get((s, t), "not evaluated") for t in targets) + " |")
    return [head, "", *table]


def collapse_line(behaviour: pd.DataFrame) -> str:
    """Which models answer one label on most of a target's rows (`collapsed` in behaviour.csv)."""
    flagged = behaviour[flags(behaviour["collapsed"])]
    rule = "one label on at least 90% of a target's rows"
    if flagged.empty:
        return f"No model answers {rule} (`behaviour.csv`)."
    parts = []
    for model, rows in flagged.groupby("model", sort=False):
        on = [f"{r['target']} ({r['majority_share']:.0%})" for _, r in rows.iterrows()]
        name = "the base model" if model == BASE else model
        parts.append(f"{name} on {', '.join(on)}")
    return f"Models that answer {rule} (`behaviour.csv`): " + "; ".join(parts) + "."


def in_task_lines(scores: pd.DataFrame, stats: pd.DataFrame) -> list[str]:
    """In-task score of every source whose task is a target, base → tuned, in the target's own metric and
    in balanced accuracy where it was scored (`scores.csv`)."""
    metric_of = dict(zip(stats["target"], stats["metric"], strict=False))
    rows = []
    for source in dict.fromkeys(stats["source"]):
        task = task_of(source)
        if task not in metric_of:
            continue
        parts = []
        for metric in dict.fromkeys([metric_of[task], SECONDARY]):
            pair = [_score(scores, model, task, metric) for model in (BASE, source)]
            if None not in pair:
                parts.append(f"{metric.replace('_', ' ')} {pair[0]} → {pair[1]}")
        if parts:
            rows.append(f"{source} on {task}: " + "; ".join(parts))
    if not rows:
        return []
    return ["In-task scores, base → tuned, with 95% CIs (`scores.csv`): " + ". ".join(rows) + "."]


def _score(scores: pd.DataFrame, model: str, target: str, metric: str) -> str | None:
    hit = scores[(scores["model"] == model) & (scores["target"] == target) & (scores["metric"] == metric)]
    if hit.empty:
        return None
    r = hit.iloc[0]
    return score(float(r["value"]), float(r["ci_low"]), float(r["ci_high"]))


def pca_line(null: pd.DataFrame, stats: pd.DataFrame) -> str:
    """Which principal components of Δ are above their permutation null (`pca_null.csv`)."""
    fitted = sum(1 for s in dict.fromkeys(stats["source"]) if task_of(s) == s)
    where = f"`pca_null.csv`; fitted on {fitted} non-control sources"
    above = null[flags(null["above_null"])]
    if above.empty:
        first = null.iloc[0]
        return (
            f"No principal component of Δ is above its permutation null ({where}): {first['component']} "
            f"explains {first['explained']:.0%} of Δ's variance, the null's 95th percentile is "
            f"{first['null_p95']:.0%}."
        )
    parts = [
        f"{r['component']} ({r['explained']:.0%} of Δ's variance; null 95th percentile {r['null_p95']:.0%})"
        for _, r in above.iterrows()
    ]
    rest = "" if len(above) == len(null) else "; the later components are not"
    verb = "is above its permutation null" if len(above) == 1 else "are above their permutation nulls"
    return f"{', '.join(parts)} {verb}{rest} ({where})."


def render(run_dir: Path) -> str:
    """The generated block, markers included, from `run_dir/tables`."""
    tables = Path(run_dir) / "tables"
    stats = pd.read_csv(tables / "delta_stats.csv")
    lines = delta_lines(stats)
    lines += ["", collapse_line(pd.read_csv(tables / "behaviour.csv"))]
    in_task = in_task_lines(pd.read_csv(tables / "scores.csv"), stats)
    lines += ["", *in_task] if in_task else []
    lines += ["", pca_line(pd.read_csv(tables / "pca_null.csv"), stats)]
    return "\n".join([BEGIN, *(wrap(line) for line in lines), END])


def wrap(line: str) -> str:
    """A prose line wrapped at the README's 110 columns; table rows and blank lines as they are."""
    if not line or line.startswith("|"):
        return line
    return textwrap.fill(line, WIDTH, break_long_words=False, break_on_hyphens=False)


def replace_block(readme: str, block: str) -> str:
    """`readme` with the text from the begin marker to the end marker replaced by `block`."""
    start, stop = readme.find(BEGIN_TAG), readme.find(END)
    if start < 0 or stop < start:
        raise SystemExit(f"error: README has no '{BEGIN_TAG} … -->' … '{END}' block")
    return readme[:start] + block + readme[stop + len(END) :]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a quick-start run folder (holds tables/)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="replace the block in the README")
    mode.add_argument("--check", action="store_true", help="exit 1 with a diff when the README differs")
    parser.add_argument("--readme", type=Path, default=REPO_ROOT / "README.md")
    args = parser.parse_args(argv)
    block = render(args.run_dir)
    if not (args.write or args.check):
        print(block)
        return 0
    readme = args.readme.read_text(encoding="utf-8")
    updated = replace_block(readme, block)
    if args.write:
        args.readme.write_text(updated, encoding="utf-8")
        return 0
    if updated == readme:
        return 0
    diff = difflib.unified_diff(
        readme.splitlines(keepends=True),
        updated.splitlines(keepends=True),
        f"{args.readme} (now)",
        f"{args.readme} (from {args.run_dir}/tables)",
    )
    sys.stdout.writelines(diff)
    print(f"{args.readme}: quick-start figures differ from {args.run_dir}/tables; run with --write")
    return 1


if __name__ == "__main__":
    sys.exit(main())
