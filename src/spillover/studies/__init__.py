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
    jobs: Mapping[str, Callable] = field(
        default_factory=dict
    )  # job kind -> (ctx, plan, job) -> (result, scores)


STUDIES: Registry[Callable[[], StudyKind]] = Registry("study kind")


@STUDIES.register("transfer")
def _transfer() -> StudyKind:
    from spillover.studies import transfer, transfer_report

    return StudyKind(
        transfer.TransferStudySpec, transfer.check_inputs, transfer.build_plan, transfer_report.analyse_job
    )


@STUDIES.register("mixture")
def _mixture() -> StudyKind:
    from spillover.studies import mixture, mixture_report

    return StudyKind(mixture.MixtureStudySpec, mixture.check_inputs, mixture.build_plan, mixture_report.analyse_job,
                     jobs=mixture.JOBS)  # fmt: skip
