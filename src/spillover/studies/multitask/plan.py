"""The multitask study's jobs (methods.md §3): CPI-FT against joint and multi-stage SFT, and a sequential
forgetting test, on the same tasks.

Plan (the study's own job kinds are in handlers.py; `eval` is the shared one):
- `eval` of the base model on every task (one job per task, reused by every comparison);
- `probe` per task: a single-task fine-tune (the study's `train:`) = θ⁽ⁱ⁾; evaluated on its own task (the
  single-task reference of the normalised average) and on its sequential partners (B after A);
- `cores`: update magnitudes, top-p% core regions, Jaccard matrix, where the cores live, and the p × τ
  sweep (no training; τ is not among its inputs, so a new τ re-runs only the staged methods);
- `mt_train` per method: `joint` (one run on all tasks), `multistage_random` / `multistage_heuristic` (the
  CPI groups as stages, without isolation) and `cpi` (fusion, then staged training on a balanced sample
  with cumulative freezing); each evaluated on every task;
- `sequential` per ordered pair (A, B) and method (`sft`, `cpi`): start from A's probe, train on B (CPI:
  with A's core frozen); evaluated on A and B;
- `analyse`: tables/ and report.html.
"""

from __future__ import annotations

from typing import Literal

from spillover.config import TrainSettings
from spillover.engine.plan import JobParams, Plan
from spillover.studies.contract import BASE
from spillover.studies.jobs import EvalJob, ModelJob, TrainJob
from spillover.studies.multitask.spec import (
    SEQUENTIAL_METHODS,
    CpiMethodSettings,
    CpiSettings,
    MultitaskStudySpec,
    SweepSettings,
    seq_label,
    single_label,
)

Fingerprint = dict[str, str]


class ProbeJob(ModelJob):
    """A single-task fine-tune θ⁽ⁱ⁾ from θ0 on the task's training data (the study's `train:`)."""

    cache_neutral = TrainJob.cache_neutral
    task: str
    data: Fingerprint
    train: TrainSettings


class CoresJob(ModelJob):
    """Core regions of every probe at `p`, their Jaccard matrix, where they live, and the p × τ sweep."""

    cache_neutral = TrainJob.cache_neutral
    tasks: list[str]
    train: TrainSettings
    p: float
    scope: Literal["global", "per_tensor"]
    sweep: SweepSettings
    seed: int


class MtTrainJob(ModelJob):
    """One multi-task method: `joint`, `multistage_random` / `multistage_heuristic` (grouped at `tau`), or
    `cpi` (with its settings `cpi`). Only the fields a method reads are set, so a new τ re-runs the staged
    methods alone and a new ω re-runs CPI-FT alone."""

    cache_neutral = TrainJob.cache_neutral
    method: Literal["joint", "multistage_random", "multistage_heuristic", "cpi"]
    tasks: list[str]
    data: dict[str, Fingerprint]
    train: TrainSettings
    seed: int
    tau: float | None = None
    cpi: CpiMethodSettings | None = None


class SequentialJob(ModelJob):
    """Train on `second` starting from `first`'s probe; `cpi`: with `first`'s core region frozen."""

    cache_neutral = TrainJob.cache_neutral
    method: Literal["sft", "cpi"]
    first: str
    second: str
    data: dict[str, Fingerprint]
    train: TrainSettings


class MultitaskAnalyseJob(JobParams):
    """The analyse job: the tasks, the methods compared, the sequential orders and the CPI-FT settings."""

    tasks: list[str]
    methods: list[str]
    orders: list[tuple[str, str]]
    cpi: CpiSettings
    seed: int


def build_plan(spec: MultitaskStudySpec, fingerprints: dict[str, Fingerprint]) -> Plan:
    """The study's DAG (see the module doc)."""
    plan = Plan()
    model = {"model": spec.model, "precision": spec.precision}
    data = {t: fingerprints[t] for t in spec.tasks}

    def evals(label: str, targets: list[str], deps: list[str]) -> list[str]:
        return [
            plan.add(
                "eval",
                f"eval {label} -> {t}",
                EvalJob(**model, label=label, target=t, data=data[t], eval=spec.eval),
                deps=deps,
            )
            for t in targets
        ]

    done = evals(BASE, spec.tasks, [])
    probes = {}
    for t in spec.tasks:
        probes[t] = plan.add("probe", f"probe {t}", ProbeJob(**model, task=t, data=data[t], train=spec.train))
        done += evals(single_label(t), spec.probe_targets(t), [probes[t]])
    c = spec.cpi
    cores_params = CoresJob(
        **model, tasks=spec.tasks, train=spec.train, p=c.p, scope=c.scope, sweep=c.sweep, seed=spec.seed
    )
    cores = plan.add("cores", "core regions + grouping", cores_params, deps=list(probes.values()))
    runs = []  # CPI-FT and the forgetting test first: a run cut short still has them
    for a, b in spec.orders():
        for m in SEQUENTIAL_METHODS:
            params = SequentialJob(
                **model, method=m, first=a, second=b, data={a: data[a], b: data[b]}, train=spec.train
            )
            run = plan.add("sequential", f"sequential {m} {a} > {b}", params, deps=[probes[a], cores])
            runs.append(run)
            done += evals(seq_label(m, a, b), [a, b], [run])
    for m in ["cpi", *spec.baselines]:
        params = MtTrainJob(
            **model,
            method=m,
            tasks=spec.tasks,
            data=data,
            train=spec.train,
            seed=spec.seed,
            tau=spec.cpi.tau if m.startswith("multistage_") else None,  # τ only here and in cpi
            cpi=CpiMethodSettings(**spec.cpi.model_dump(exclude={"sweep"})) if m == "cpi" else None,
        )
        # every job lists what it reads: CPI-FT fuses the probes (their models must outlive pruning, and a
        # Ray worker sees only its dependencies' results)
        deps = [] if m == "joint" else [cores, *probes.values()] if m == "cpi" else [cores]
        run = plan.add("mt_train", f"train {m}", params, deps=deps)
        runs.append(run)
        done += evals(m, spec.tasks, [run])
    analyse = MultitaskAnalyseJob(
        tasks=spec.tasks, methods=spec.methods(), orders=spec.orders(), cpi=spec.cpi, seed=spec.seed
    )
    plan.add("analyse", "analyse + report", analyse, deps=[cores, *runs, *done])
    return plan
