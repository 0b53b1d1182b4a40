"""The tradeoff study's jobs (methods.md §4): forgetting vs specialisation over learning rates and methods.

For every domain task, every supervision format, every method (LoRA/full, objective, regularisers) and
every learning rate, fine-tune on the domain; evaluate the domain task and every general task; measure the
code length (mean target-token cross-entropy in bits) on the domain's and the general tasks' test data;
for methods with `wise_ft` alphas, also evaluate the WiSE-FT interpolations. The base model is evaluated
once, and its token probabilities on each domain's training data are recorded (`tokens` jobs).

Plan: per domain × format a `tokens` job; base `eval` per target and a base `codelen` job; per run a
`train` job, its `eval` jobs (domain + general) and a `codelen` job, and the same per WiSE-FT α (eval and
codelen jobs carry `alpha`); one `analyse` job. `tokens` and `codelen` run in `handlers.py`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from spillover.data.tasks import TaskSpec
from spillover.engine.plan import JobParams, Plan
from spillover.studies.contract import BASE
from spillover.studies.jobs import EvalJob, ModelJob, TrainJob
from spillover.studies.tradeoff.spec import MethodSpec, TokenSettings, TradeoffStudySpec, run_settings


class RunKey(BaseModel):
    """Which grid point a tuned model belongs to: the rows and series of the analysis."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    domain: str
    format: str
    method: str
    lr: float


class TradeoffTrainJob(TrainJob):
    """Fine-tune on one domain in one supervision format; `run` names the grid point."""

    run: RunKey


class TradeoffEvalJob(EvalJob):
    """An evaluation of the base (`run` None) or of one run's model (WiSE-FT mix when `alpha` < 1)."""

    run: RunKey | None = None


class TokensJob(ModelJob):
    """The base model's probability of every target token of a domain's training sequences (the sequences
    training sees: same `limit`, `max_len` and format), and `examples` sequences shown token by token."""

    task: str
    data: dict[str, str]
    format: str
    transforms: list[dict[str, Any]] = []
    limit: int | None
    max_len: int
    examples: int


class Dataset(BaseModel):
    """A task whose test data a code-length job scores, with its data fingerprints."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    task: str
    data: dict[str, str]


class CodelenJob(ModelJob):
    """One model's code length (bits per target token) on the first `limit` test rows of each dataset: the
    base (`run` None), a tuned model, or its WiSE-FT mix (`alpha` < 1)."""

    label: str
    datasets: list[Dataset]
    limit: int | None
    batch_size: int  # hashed like eval.batch_size: padding can move the last bits of a batched score
    max_len: int
    run: RunKey | None = None
    alpha: float = 1.0


class TradeoffAnalyseJob(JobParams):
    """The analyse job: the domains, the general tasks of the score and code-length views, token settings."""

    domains: list[str]
    general: list[str]
    cl_general: list[str]
    tokens: TokenSettings
    match_tolerance: float


def format_transforms(task: TaskSpec, fmt: str) -> list[dict[str, Any]]:
    """`target`: the task's target as is (for gsm8k the worked solution); `label_only`: its bare answer."""
    return [{"name": "target_field", "field": task.answer_field}] if fmt == "label_only" else []


def run_label(domain: str, fmt: str, method: str, lr: float, alpha: float = 1.0) -> str:
    """The model name in scores: "gsm8k:target:talr:lr=0.0001" (+ ":wise=0.5")."""
    label = f"{domain}:{fmt}:{method}:lr={lr:g}"
    return label if alpha == 1.0 else f"{label}:wise={alpha:g}"


def build_plan(
    spec: TradeoffStudySpec,
    fingerprints: dict[str, dict[str, str]],
    tasks: dict[str, TaskSpec] | None = None,
) -> Plan:
    """The study's DAG. `fingerprints[task]` = {"spec": ..., "train": ..., "test": ...} content hashes;
    `tasks` (resolved from the spec when None) give the domains' answer fields for `label_only`."""
    from spillover.data.tasks import resolve_tasks

    tasks = tasks or {t.name: t for t in resolve_tasks(spec.task_names(), spec.tasks_file)}
    plan, model = Plan(), {"model": spec.model, "precision": spec.precision}
    needed = []
    for d in spec.domains:
        for fmt in spec.formats:
            params = TokensJob(
                **model,
                task=d,
                data=fingerprints[d],
                format=fmt,
                transforms=format_transforms(tasks[d], fmt),
                limit=spec.train.limit,
                max_len=spec.train.max_len,
                examples=spec.tokens.examples,
            )
            needed.append(plan.add("tokens", f"tokens {d} ({fmt})", params))
    for t in [*spec.domains, *spec.general]:
        params = TradeoffEvalJob(**model, label=BASE, target=t, data=fingerprints[t], eval=spec.eval)
        needed.append(plan.add("eval", f"eval base -> {t}", params))
    base_cl = _codelen(
        spec, model, BASE, list(dict.fromkeys([*spec.domains, *spec.cl_general(tasks)])), fingerprints
    )
    needed.append(plan.add("codelen", "code length base", base_cl))
    for d in spec.domains:
        for fmt in spec.formats:
            for m in spec.methods:
                for lr in m.learning_rates or spec.learning_rates:
                    run = RunKey(domain=d, format=fmt, method=m.label, lr=lr)
                    needed += _run_jobs(plan, spec, tasks, model, run, m, fingerprints)
    analyse = TradeoffAnalyseJob(
        domains=spec.domains,
        general=spec.general,
        cl_general=spec.cl_general(tasks),
        tokens=spec.tokens,
        match_tolerance=spec.match_tolerance,
    )
    plan.add("analyse", "analyse + report", analyse, deps=needed)
    return plan


def _codelen(
    spec: TradeoffStudySpec,
    model: dict[str, str],
    label: str,
    names: list[str],
    fingerprints: dict[str, dict[str, str]],
    **run: Any,
) -> CodelenJob:
    return CodelenJob(
        **model,
        label=label,
        datasets=[Dataset(task=t, data=fingerprints[t]) for t in names],
        limit=spec.codelength.limit,
        batch_size=spec.codelength.batch_size,
        max_len=spec.train.max_len,
        **run,
    )


def _run_jobs(
    plan: Plan,
    spec: TradeoffStudySpec,
    tasks: dict[str, TaskSpec],
    model: dict[str, str],
    run: RunKey,
    m: MethodSpec,
    fingerprints: dict[str, dict[str, str]],
) -> list[str]:
    """One training run's train job, then per α (1 = the tuned model itself) its eval and codelen jobs."""
    d = run.domain
    trained = TradeoffTrainJob(
        **model,
        task=d,
        data=fingerprints[d],
        transforms=format_transforms(tasks[d], run.format),
        train=run_settings(spec, m, run.lr),
        run=run,
    )
    train_id = plan.add("train", f"train {run_label(d, run.format, m.label, run.lr)}", trained)
    ids = [train_id]
    for alpha in [1.0, *m.wise_ft]:
        label = run_label(d, run.format, m.label, run.lr, alpha)
        for t in [d, *spec.general]:
            params = TradeoffEvalJob(
                **model, label=label, target=t, data=fingerprints[t], eval=spec.eval, run=run, alpha=alpha
            )
            ids.append(plan.add("eval", f"eval {label} -> {t}", params, deps=[train_id]))
        params = _codelen(
            spec, model, label, [d, *spec.cl_general(tasks)], fingerprints, run=run, alpha=alpha
        )
        ids.append(plan.add("codelen", f"code length {label}", params, deps=[train_id]))
    return ids
