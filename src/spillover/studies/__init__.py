"""Study kinds. Each module defines its spec (a `StudySpec` subclass), its plan and its analysis; this
registry maps the YAML's `study:` value to them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from spillover.registry import Registry


@dataclass(frozen=True)
class StudyKind:
    spec: type  # the pydantic spec class
    check: Callable  # (spec, tasks, load) -> None, raises SpilloverError before any work
    build_plan: Callable  # (spec, fingerprints) -> Plan
    analyse: Callable  # (ctx, plan, job) -> result dict; writes tables/ and report.html
    # the kind's own job kinds: {job kind: (ctx, plan, job) -> (result, score rows)}, tried before the shared ones
    handlers: Mapping[str, Callable] = field(default_factory=dict)


STUDIES: Registry[Callable[[], StudyKind]] = Registry("study kind")


@STUDIES.register("transfer")
def _transfer() -> StudyKind:
    from spillover.studies import transfer, transfer_report

    return StudyKind(
        transfer.TransferStudySpec, transfer.check_inputs, transfer.build_plan, transfer_report.analyse_job
    )


@STUDIES.register("generalization")
def _generalization() -> StudyKind:
    from spillover.studies import generalization, generalization_report

    return StudyKind(
        generalization.GeneralizationStudySpec,
        generalization.check_study,
        generalization.build_plan,
        generalization_report.analyse_job,
    )


@STUDIES.register("tradeoff")
def _tradeoff() -> StudyKind:
    from spillover.studies import tradeoff, tradeoff_jobs, tradeoff_report

    return StudyKind(
        tradeoff.TradeoffStudySpec,
        tradeoff.check_inputs,
        tradeoff.build_plan,
        tradeoff_report.analyse_job,
        tradeoff_jobs.HANDLERS,
    )


@STUDIES.register("mixture")
def _mixture() -> StudyKind:
    from spillover.studies import mixture, mixture_report

    return StudyKind(
        mixture.MixtureStudySpec,
        mixture.check_inputs,
        mixture.build_plan,
        mixture_report.analyse_job,
        handlers=mixture.JOBS,
    )


@STUDIES.register("multitask")
def _multitask() -> StudyKind:
    from spillover.studies import multitask, multitask_jobs, multitask_report

    return StudyKind(
        multitask.MultitaskStudySpec,
        multitask.check_inputs,
        multitask.build_plan,
        multitask_report.analyse_job,
        handlers=multitask_jobs.HANDLERS,
    )
