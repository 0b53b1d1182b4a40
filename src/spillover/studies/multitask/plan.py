"""The multitask study (methods.md §3): Core Parameter Isolation fine-tuning (CPI-FT) against joint and
multi-stage SFT, and a sequential forgetting test, on the same tasks.

Plan (job kinds in `studies.multitask_jobs`):
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

from pydantic import BaseModel, Field, field_validator, model_validator

from spillover.config import Strict, StudySpec
from spillover.data.tasks import TaskSpec
from spillover.engine.plan import Plan
from spillover.errors import SpilloverError

BASE = "base"
BASELINES = ("joint", "multistage_random", "multistage_heuristic")
SEQUENTIAL_METHODS = ("sft", "cpi")


class SweepSettings(BaseModel):
    """Core fractions and thresholds for the sweep (computed from the probes, no extra training)."""

    model_config = Strict
    p: list[float] = Field(default=[0.1, 0.5, 1.0, 5.0], min_length=1, description="core fractions in %")
    tau: list[float] = Field(default=[0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0], min_length=1)

    @field_validator("p")
    @classmethod
    def _percent(cls, v: list[float]) -> list[float]:
        bad = [x for x in v if not 0.0 < x <= 100.0]
        if bad:
            raise ValueError(f"core fraction p={bad[0]} is not allowed; use percentages in (0, 100]")
        return sorted(set(v))

    @field_validator("tau")
    @classmethod
    def _unit(cls, v: list[float]) -> list[float]:
        bad = [x for x in v if not 0.0 <= x <= 1.0]
        if bad:
            raise ValueError(f"grouping threshold tau={bad[0]} is not allowed; use numbers in [0, 1]")
        return sorted(set(v))


class CpiSettings(BaseModel):
    """CPI-FT hyper-parameters (methods.md §3; reference p = 1%, τ = 0.1)."""

    model_config = Strict
    p: float = Field(default=1.0, gt=0, le=100, description="core region: top-p% update magnitudes")
    scope: Literal["global", "per_tensor"] = "global"
    tau: float = Field(default=0.1, ge=0, le=1, description="link tasks whose cores' Jaccard ≥ tau")
    order: Literal["heuristic", "random"] = "heuristic"
    fusion_base: Literal["last_probe", "base"] = Field(
        default="last_probe", description="start of fusion: the last stage's probe model, or θ0"
    )
    omega: float = Field(default=0.5, ge=0, le=1, description="SLERP factor for non-core positions")
    epsilon: float = Field(default=1e-4, ge=0, description="angle (radians) below which SLERP → LERP")
    calibration: int = Field(default=32, ge=1, description="examples per task in each stage's sample")
    sweep: SweepSettings = Field(default_factory=SweepSettings)


class MultitaskStudySpec(StudySpec):
    study: Literal["multitask"] = "multitask"
    tasks: list[str] = Field(min_length=2)
    cpi: CpiSettings = Field(default_factory=CpiSettings)
    baselines: list[Literal["joint", "multistage_random", "multistage_heuristic"]] = Field(
        default_factory=lambda: list(BASELINES)
    )
    sequential: list[list[str]] = Field(
        default_factory=list, description="pairs [A, B]: train A then B and B then A, per method"
    )

    @model_validator(mode="after")
    def _consistent(self) -> MultitaskStudySpec:
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks has duplicates: {self.tasks}")
        if len(set(self.baselines)) != len(self.baselines):
            raise ValueError(f"baselines has duplicates: {self.baselines}")
        if self.train.mixture is not None:
            raise ValueError("a multitask study mixes its tasks itself; remove `train.mixture`")
        seen = set()
        for i, pair in enumerate(self.sequential):
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ValueError(f"sequential[{i}] = {pair}: give two different tasks [A, B]")
            unknown = [t for t in pair if t not in self.tasks]
            if unknown:
                raise ValueError(
                    f"sequential[{i}] = {pair}: {unknown} not among the study's tasks {self.tasks}"
                )
            if frozenset(pair) in seen:
                raise ValueError(
                    f"sequential[{i}] = {pair}: this pair is already listed (both orders always run)"
                )
            seen.add(frozenset(pair))
        return self

    def task_names(self) -> list[str]:
        return list(self.tasks)

    def methods(self) -> list[str]:
        return [*self.baselines, "cpi"]

    def probe_targets(self, task: str) -> list[str]:
        """A probe is scored on its own task (the normalisation reference) and, when it is stage 1 of a
        sequential run, on the other task of the pair (B after A)."""
        partners = {b for a, b in self.orders() if a == task}
        return [t for t in self.tasks if t == task or t in partners]

    def orders(self) -> list[tuple[str, str]]:
        """Every sequential run: (A, B) and (B, A) for each listed pair."""
        return [o for a, b in self.sequential for o in ((a, b), (b, a))]


def check_inputs(spec: MultitaskStudySpec, tasks: dict[str, TaskSpec], load) -> None:
    """Every task has a train split and a test split, and every row the jobs will read is valid."""
    for name in spec.tasks:
        if tasks[name].train is None:
            raise SpilloverError(f"task '{name}' has no train split (set `train:` in its task spec)")
        load(name, "train", spec.train.limit)
        load(name, "test", spec.eval.limit)
        if spec.eval.shots:
            load(name, "train", None)


def seq_label(method: str, first: str, second: str) -> str:
    return f"seq:{method}:{first}>{second}"


def single_label(task: str) -> str:
    return f"single:{task}"


def build_plan(spec: MultitaskStudySpec, fingerprints: dict[str, dict[str, str]]) -> Plan:
    """The study's DAG (see the module doc)."""
    plan, model = Plan(), {"model": spec.model, "precision": spec.precision}
    tr, ev = spec.train.job_params(), spec.eval.job_params()
    data = {t: fingerprints[t] for t in spec.tasks}
    cores_cfg = spec.cpi.model_dump(mode="json", include={"p", "scope", "sweep"})

    def evals(label: str, targets: list[str], deps: list[str]) -> list[str]:
        return [
            plan.add(
                "eval",
                f"eval {label} -> {t}",
                {**model, "label": label, "target": t, "data": data[t], "eval": ev},
                deps=deps,
            )
            for t in targets
        ]

    done = evals(BASE, spec.tasks, [])
    probes = {}
    for t in spec.tasks:
        probes[t] = plan.add("probe", f"probe {t}", {**model, "task": t, "data": data[t], "train": tr})
        done += evals(single_label(t), spec.probe_targets(t), [probes[t]])
    cores = plan.add(
        "cores",
        "core regions + grouping",
        {**model, "tasks": spec.tasks, "train": tr, "cpi": cores_cfg, "seed": spec.seed},
        deps=list(probes.values()),
    )
    runs = []  # CPI-FT and the forgetting test first: a run cut short still has them
    for a, b in spec.orders():
        for m in SEQUENTIAL_METHODS:
            run = plan.add(
                "sequential",
                f"sequential {m} {a} > {b}",
                {
                    **model,
                    "method": m,
                    "first": a,
                    "second": b,
                    "data": {a: data[a], b: data[b]},
                    "train": tr,
                },
                deps=[probes[a], cores],
            )
            runs.append(run)
            done += evals(seq_label(m, a, b), [a, b], [run])
    for m in ["cpi", *spec.baselines]:
        cfg = {} if m == "joint" else {"tau": spec.cpi.tau}  # τ only here: a new τ re-runs these alone
        if m == "cpi":
            cfg = spec.cpi.model_dump(mode="json", exclude={"sweep"})
        run = plan.add(
            "mt_train",
            f"train {m}",
            {
                **model,
                "method": m,
                "tasks": spec.tasks,
                "data": data,
                "train": tr,
                "cpi": cfg,
                "seed": spec.seed,
            },
            deps=[] if m == "joint" else [cores],
        )
        runs.append(run)
        done += evals(m, spec.tasks, [run])
    plan.add(
        "analyse",
        "analyse + report",
        {
            "tasks": spec.tasks,
            "methods": spec.methods(),
            "orders": [list(o) for o in spec.orders()],
            "cpi": spec.cpi.model_dump(mode="json"),
            "seed": spec.seed,
        },
        deps=[cores, *runs, *done],
    )
    return plan
