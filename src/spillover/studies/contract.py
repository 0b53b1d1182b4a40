"""The study contract: what every study kind provides, and the pieces written once for all of them.

A study kind is one subpackage of `spillover.studies` (transfer/, generalization/, …) with the same roles:

  spec.py      the user-facing pydantic spec (a `StudySpec` subclass) and its input checks
  plan.py      its jobs: one frozen `JobParams` model per job kind it adds, and `build_plan`
  handlers.py  what each of its own job kinds does (calls into the library); shared kinds live in `jobs.py`
  analysis.py  pure functions: `Results` -> `Analysis` (tables + notes)
  sections.py  `Analysis` -> report sections

and registers a `StudyKind` under its name in its `__init__.py`. Gathering results from the store
(`gather`), writing tables (CSV + Parquet) and rendering the report (`report_job`) live here, once.
A new kind is a new folder; docs/studies.md walks through one.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from spillover.analysis.transfer import BASE  # noqa: F401 - the untuned model's label in every study's tables
from spillover.engine.plan import Job, JobParams, Plan
from spillover.errors import SpilloverError

if TYPE_CHECKING:
    from spillover.config import StudySpec
    from spillover.data.tasks import TaskSpec
    from spillover.engine.store import Store
    from spillover.report.html import Section
    from spillover.studies.context import StudyContext


log = logging.getLogger(__name__)

# A job's output for the store: its result (JSON-ready) and its score rows.
JobOutput = tuple[dict[str, Any], list[dict[str, Any]]]
Handler = Callable[["StudyContext", Plan, Job], JobOutput]
LONG_COLUMNS = ["model", "target", "metric", "value", "n", "ci_low", "ci_high"]
SCORE_COLUMNS = ["job_id", "model", "target", "metric", "value", "n", "ci_low", "ci_high", "shots", "extra"]


@dataclass
class Results:
    """Everything a study has finished, read once from the store: the only input of a kind's analysis."""

    spec: StudySpec
    tasks: dict[str, TaskSpec]
    plan: Plan
    root: Path
    results: dict[str, dict[str, Any]]  # job id -> stored result, finished jobs only
    scores: pd.DataFrame  # every score row of the finished jobs (SCORE_COLUMNS), in plan order

    def finished(self, kind: str) -> list[Job]:
        """The finished jobs of one kind, in plan order."""
        return [j for j in self.plan.by_kind(kind) if j.id in self.results]

    def result(self, job: Job | str) -> dict[str, Any]:
        return self.results[job if isinstance(job, str) else job.id]

    def scores_of(self, jobs: list[Job]) -> pd.DataFrame:
        """The score rows of `jobs`, in their order."""
        order = {j.id: i for i, j in enumerate(jobs)}
        rows = self.scores[self.scores["job_id"].isin(order)]
        return rows.sort_values("job_id", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)

    def long_scores(self, jobs: list[Job]) -> pd.DataFrame:
        """The (model, target, metric, value, n, ci_low, ci_high) table of `jobs`' scores, in their order.

        Training-seed replicates of one job (`Plan.replica_of`) become one row: value = the mean over the
        seeds that finished; ci_low / ci_high are NaN there (a one-seed bootstrap interval says nothing about
        the mean over seeds: the intervals of differences are in the paired comparisons, the seed-to-seed
        spread in `seed_spread`)."""
        rows = self.replicated_scores(jobs)
        if not self.plan.replica_of or rows.empty:
            return rows[LONG_COLUMNS]
        return mean_over_seeds(rows, ["_job", "_row"])[LONG_COLUMNS]

    def replicated_scores(self, jobs: list[Job]) -> pd.DataFrame:
        """`scores_of(jobs)` plus what groups training-seed replicates: `_job` (the first seed's job id),
        `_row` (the row's place among its job's score rows) and `_seed` (None for a job every seed shares)."""
        rows = self.scores_of(jobs)
        return rows.assign(
            _job=rows["job_id"].map(self.replica),
            _row=rows.groupby("job_id", sort=False).cumcount(),
            _seed=rows["job_id"].map(self.seed_of),
        )

    def replica(self, job: Job | str) -> str:
        """The id of a job's first-seed counterpart (itself when the job is not replicated)."""
        job_id = job if isinstance(job, str) else job.id
        return self.plan.replica_of.get(job_id, job_id)

    def seed_of(self, job: Job | str) -> int | None:
        """The training seed of a job that exists once per seed (None: shared by every seed, or one seed)."""
        return self.plan.seed_of.get(job if isinstance(job, str) else job.id)

    def job_dir(self, job: Job | str) -> Path:
        """A job's artifact folder (files it wrote beside its result)."""
        return self.root / "jobs" / (job if isinstance(job, str) else job.id)


def mean_over_seeds(
    rows: pd.DataFrame,
    by: list[str],
    mean: list[str] | None = None,
    any_of: tuple[str, ...] = ("collapsed",),
    interval: tuple[str, ...] = ("ci_low", "ci_high"),
) -> pd.DataFrame:
    """One row per `by` group of training-seed replicates: the first row's fields, the `mean` columns
    (default: `value`) averaged, the `any_of` columns true when any seed's is, and the `interval` columns NaN
    where several seeds entered (a one-seed bootstrap interval says nothing about the mean over seeds).
    Rows keep their first-appearance order; the `by` columns are dropped when they start with "_"."""
    keep = [c for c in rows.columns if not c.startswith("_")]
    group = rows.groupby(by, sort=False, dropna=False).ngroup()
    if not group.duplicated().any():
        return rows[keep].reset_index(drop=True)
    first = rows.loc[~group.duplicated()].copy()  # the first seed's row, values as they were (None stays)
    key = group[first.index]
    per = rows.groupby(group)
    for column in mean or ["value"]:
        first[column] = key.map(per[column].mean())
    for column in (c for c in any_of if c in rows):
        first[column] = key.map(per[column].max())
    several = key.map(per.size()) > 1
    first.loc[several, [c for c in interval if c in rows]] = float("nan")
    return first[keep].reset_index(drop=True)


def gather(store: Store, plan: Plan, spec: StudySpec, tasks: dict[str, TaskSpec]) -> Results:
    """Read every finished job's result and scores from the store."""
    done = {j["id"] for j in store.jobs() if j["status"] == "done"}
    ids = [j.id for j in plan if j.id in done]
    results = {job_id: store.result(job_id) for job_id in ids}
    scores = pd.DataFrame(store.scores(ids), columns=SCORE_COLUMNS)
    return Results(spec, tasks, plan, Path(store.root), results, scores)


@dataclass
class Analysis:
    """A kind's analysis output: named tables (each written as CSV + Parquet), notes on what is missing or
    odd, the report's footer line, and `extra` for what sections show beyond tables (e.g. token examples)."""

    tables: dict[str, pd.DataFrame]
    notes: list[str] = field(default_factory=list)
    footer: str = ""
    extra: Any = None


@dataclass(frozen=True)
class StudyKind:
    """One study kind. `check(spec, tasks, load)` raises SpilloverError before any work;
    `build_plan(spec, fingerprints)` returns the DAG; `analyse(results, params)` is pure; `sections(analysis,
    results)` lays the report out; `handlers` are the kind's own job kinds (tried before the shared ones)."""

    name: str
    title: str
    spec: type[StudySpec]
    check: Callable[[Any, dict[str, TaskSpec], Callable], None]
    build_plan: Callable[[Any, dict[str, dict[str, str]]], Plan]
    analyse: Callable[[Results, JobParams], Analysis]
    sections: Callable[[Analysis, Results], list[Section]]
    handlers: Mapping[str, Handler] = field(default_factory=dict)


ROLES = ("spec", "plan", "handlers", "analysis", "sections")


def register_kind(name: str, title: str, package: str, spec: str, check: str = "check_inputs") -> None:
    """Register the kind whose folder is `package` under `name`: its modules are the five roles (ROLES), found
    by their conventional names — spec.`spec` (the spec class) and spec.`check`, plan.build_plan,
    handlers.HANDLERS, analysis.analyse, sections.sections — and imported on first use."""
    from spillover.studies import STUDIES

    @STUDIES.register(name)
    def kind() -> StudyKind:
        m = {role: importlib.import_module(f"{package}.{role}") for role in ROLES}
        return StudyKind(
            name=name,
            title=title,
            spec=getattr(m["spec"], spec),
            check=getattr(m["spec"], check),
            build_plan=m["plan"].build_plan,
            analyse=m["analysis"].analyse,
            sections=m["sections"].sections,
            handlers=m["handlers"].HANDLERS,
        )


def build_study_plan(kind: StudyKind, spec: StudySpec, fingerprints: dict[str, dict[str, str]]) -> Plan:
    """The kind's plan, built once per training seed (`train.seeds`) and merged: jobs that do not depend on
    the seed (the base model's evaluations, dataset statistics) have the same id in every seed's plan and run
    once; the rest run once per seed (named "… [seed s]"); the summary job (`analyse`) reads them all. The
    kind's `build_plan` sees a spec with one seed, so it never deals with replicates, and a study without
    `seeds` keeps its job ids."""
    from spillover.engine.scheduler import SUMMARY_KINDS

    seeds = spec.train.replicate_seeds
    plans = [
        kind.build_plan(spec.model_copy(update={"train": spec.train.for_seed(s)}), fingerprints)
        for s in seeds
    ]
    if len(plans) == 1:
        return plans[0]
    shapes = {tuple(j.kind for j in p) for p in plans}
    assert len(shapes) == 1, f"study kind {kind.name} builds plans of different shapes for different seeds"
    shared = set.intersection(*(set(p.jobs) for p in plans))
    first = list(plans[0].jobs)
    merged, summaries = Plan(), {}
    for seed, plan in zip(seeds, plans, strict=True):
        for pos, job in enumerate(plan):
            if job.kind in SUMMARY_KINDS:
                summary = summaries.setdefault(pos, (job, {}))
                summary[1].update(dict.fromkeys(job.deps))
                continue
            name = job.name if job.id in shared else f"{job.name} [seed {seed}]"
            job_id = merged.add(job.kind, name, job.params, job.deps)
            if job_id not in shared:
                merged.seed_of[job_id] = seed
                merged.replica_of[job_id] = first[pos]
    for job, deps in summaries.values():
        merged.add(job.kind, job.name, job.params, list(deps))
    return merged


def eval_curves(results: Results) -> pd.DataFrame:
    """Every finished job's evaluation curves (`train.eval_every`): the `eval_curves.csv` files in its folder
    (a staged job has one per stage folder), with `model` = the job's name (and the stage folder)."""
    from spillover.evaluation.curves import COLUMNS, CURVES_FILE

    frames = []
    for job in results.plan:
        if job.id not in results.results:
            continue
        folder = results.job_dir(job)
        for path in sorted(folder.rglob(CURVES_FILE)):
            where = path.parent.relative_to(folder).as_posix()
            name = job.name if where == "." else f"{job.name} ({where})"
            frames.append(pd.read_csv(path).assign(model=name))
    if not frames:
        return pd.DataFrame(columns=["model", *COLUMNS])
    curves = pd.concat(frames, ignore_index=True)
    return curves[["model", *COLUMNS]]


def handler_for(kind: StudyKind, job_kind: str) -> Handler:
    """The handler of a job kind: the study kind's own first, then the shared ones (studies/jobs.py)."""
    from spillover.studies.jobs import SHARED_HANDLERS

    handler = kind.handlers.get(job_kind) or SHARED_HANDLERS.get(job_kind)
    assert handler is not None, f"study kind {kind.name} has no handler for job kind {job_kind}"
    return handler


def report_job(kind: StudyKind, ctx: StudyContext, plan: Plan, job: Job) -> dict[str, Any]:
    """The `analyse` job of every kind: gather → analyse → tables/ (CSV + Parquet) → report.html.
    Runs over whatever finished (a partial report beats none; see engine.scheduler). When the kind's
    analysis cannot run on what finished (e.g. the base model's evaluations failed), a partial report with
    every stored score and the reason is written, and the job then fails with that reason."""
    from spillover.report.html import Section

    results = gather(ctx.store, plan, ctx.spec, ctx.tasks)
    try:
        analysis = kind.analyse(results, job.params)
        sections = kind.sections(analysis, results)
        if plan.seed_of:  # training-seed replicates: their spread, for every kind alike
            from spillover.studies.evidence import seed_spread, seed_spread_section

            if "seed_spread" not in analysis.tables:  # a kind may compute its own (mixture: its probes)
                analysis.tables["seed_spread"] = seed_spread(results)
            sections.append(seed_spread_section(analysis.tables["seed_spread"]))
        if ctx.spec.train.eval_every is not None:  # probes during training, for every kind alike
            from spillover.report.curves import curves_section

            analysis.tables["eval_curves"] = eval_curves(results)
            sections.append(curves_section(analysis.tables["eval_curves"]))
    except (SpilloverError, ValueError, KeyError, IndexError) as e:
        why = f"the {kind.name} analysis could not run on the finished jobs: {type(e).__name__}: {e}"
        log.error("%s", why, exc_info=True)  # the traceback, for a bug rather than missing inputs
        scores = results.scores.drop(columns=["extra"])
        partial = Analysis({"scores": scores}, notes=[why], footer=f"{len(scores)} scores (partial)")
        section = Section("partial", "Partial results", notes=[why], tables=[("Every stored score", scores)])
        _write_outputs(kind, ctx, partial, [section])
        raise SpilloverError(why) from e
    return _write_outputs(kind, ctx, analysis, sections)


def _write_outputs(kind: StudyKind, ctx: StudyContext, analysis: Analysis, sections: list[Section]) -> dict:
    from spillover.report.html import render_report, write_report
    from spillover.studies.tables import write_tables

    out = Path(ctx.spec.output_dir)
    names = write_tables(analysis.tables, out / "tables")
    settings = ctx.spec.model_dump(mode="json")
    html = render_report(f"{kind.title}: {ctx.spec.model}", sections, settings, footer=analysis.footer)
    write_report(out / "report.html", html)
    return {"tables": names, "report": str(out / "report.html"), "notes": analysis.notes}
