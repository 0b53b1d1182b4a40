"""Fake finished studies for the fast comparison tests: a real plan, hand-written per-row predictions.

`fake_results(kind, spec, root, scores)` marks the plan's jobs done and writes, for every job id in `scores`,
`root/jobs/<id>/predictions.jsonl` with one record per (example id, score): exactly what
`studies.evidence.row_scores` reads, so a comparison's diff and p can be computed by hand; and each such
(evaluation) job's score row, its mean.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from spillover.engine.plan import Job
from spillover.studies.contract import SCORE_COLUMNS, Results
from spillover.studies.run import prepare

COLUMNS = ["a", "b", "target", "metric", "diff", "ci_low", "ci_high", "p", "q", "significant", "n", "seeds"]


def write_rows(path: Path, scores: Sequence[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"id": f"r{i}", "correct": float(s)}) for i, s in enumerate(scores)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def fake_results(kind, spec, root: Path, scores: Callable[[Job], Sequence[float] | None]) -> Results:
    """Every job whose `scores(job)` is not None is finished, with those per-row scores."""
    tasks, plan = prepare(kind, spec)
    done: Mapping[str, dict] = {}
    table = []
    for job in plan:
        rows = scores(job)
        if rows is not None:
            write_rows(root / "jobs" / job.id / "predictions.jsonl", rows)
            done[job.id] = {}
            table.append(_score_row(job, tasks, rows))
    return Results(spec, tasks, plan, root, dict(done), pd.DataFrame(table, columns=SCORE_COLUMNS))


def _score_row(job: Job, tasks, rows: Sequence[float]) -> dict:
    """The store's score row of an evaluation job (its mean as value; the CI is the value itself)."""
    p, mean = job.params, sum(rows) / len(rows)
    return {"job_id": job.id, "model": p.label, "target": p.target, "metric": tasks[p.target].metric} | {
        "value": mean,
        "n": len(rows),
        "ci_low": mean,
        "ci_high": mean,
        "shots": getattr(p.eval, "shots", 0),
        "extra": None,
    }
