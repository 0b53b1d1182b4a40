"""The generalization study's jobs (methods.md §2): fine-tune on each source dataset (plain FT and FTICL, at
several training sizes), evaluate every model zero-shot and k-shot on every target, and label each cell
in-domain / out-of-domain / cross-task from the tasks' `task_type` and `domain`.

Plan: base evaluations per target × shot setting; per source × method × size one `train` job followed by
its `eval` jobs (target × shot setting; `size_shots` narrows the settings of the sizes other than the main
one); one `analyse` job. Training sizes are nested (the first N rows of the source's train split), so a
larger size only adds data.
"""

from __future__ import annotations

from spillover.config import EvalSettings, TrainSettings
from spillover.engine.plan import JobParams, Plan
from spillover.studies.contract import BASE
from spillover.studies.generalization.spec import GeneralizationStudySpec, Method
from spillover.studies.jobs import EvalJob, TrainJob


class CellEvalJob(EvalJob):
    """An evaluation that is one cell of the generalization table (source None: the base model)."""

    source: str | None
    method: Method | None
    size: int | None
    shots: int


class GeneralizationAnalyseJob(JobParams):
    sources: dict[str, str]  # row label -> the task it trains on
    targets: list[str]
    methods: list[Method]
    shots: list[int]
    sizes: list[int | None]
    main_size: int | None


def model_label(source: str, method: str, size: int | None) -> str:
    return f"{source} · {method.upper()} · n={size if size is not None else 'all'}"


def build_plan(spec: GeneralizationStudySpec, fingerprints: dict[str, dict[str, str]]) -> Plan:
    """The study's DAG; eval jobs carry (source, method, size, target, shots) for the analysis."""
    plan = Plan()
    model = {"model": spec.model, "precision": spec.precision}
    evals = []
    for t in spec.targets:
        for k in spec.shots:
            cell = {"source": None, "method": None, "size": None, "target": t, "shots": k}
            params = CellEvalJob(**model, **cell, label=BASE, data=fingerprints[t], eval=_eval(spec, k))
            evals.append(plan.add("eval", f"eval base -> {t} ({k}-shot)", params))
    for s in spec.sources:
        for method in spec.methods:
            for size in spec.training_sizes():
                label = model_label(s.name, method, size)
                trained = TrainJob(
                    **model,
                    task=s.task,
                    data=fingerprints[s.task],
                    transforms=s.transforms,
                    train=_train(spec, method, size),
                )
                train_id = plan.add("train", f"train {label}", trained)
                for t in spec.targets:
                    for k in spec.shots_at(size):
                        cell = {"source": s.name, "method": method, "size": size, "target": t, "shots": k}
                        params = CellEvalJob(
                            **model, **cell, label=label, data=fingerprints[t], eval=_eval(spec, k)
                        )
                        evals.append(
                            plan.add("eval", f"eval {label} -> {t} ({k}-shot)", params, deps=[train_id])
                        )
    analyse = GeneralizationAnalyseJob(
        sources={s.name: s.task for s in spec.sources},
        targets=spec.targets,
        methods=spec.methods,
        shots=spec.shots,
        sizes=spec.training_sizes(),
        main_size=spec.main_size(),
    )
    plan.add("analyse", "analyse + report", analyse, deps=evals)
    return plan


def _train(spec: GeneralizationStudySpec, method: str, size: int | None) -> TrainSettings:
    update: dict = {"limit": size, "shots": 0}
    if method == "fticl":
        update |= {"shots": spec.fticl.shots, "demos": spec.fticl.demos}
    return spec.train.model_copy(update=update)


def _eval(spec: GeneralizationStudySpec, shots: int) -> EvalSettings:
    return spec.eval.model_copy(update={"shots": shots})
