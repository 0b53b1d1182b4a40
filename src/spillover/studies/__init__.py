"""Study kinds. Each module defines its spec (a `StudySpec` subclass), its plan and its analysis; this
registry maps the YAML's `study:` value to them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from spillover.registry import Registry


@dataclass(frozen=True)
class StudyKind:
    spec: type  # the pydantic spec class
    check: Callable  # (spec, tasks, load) -> None, raises SpilloverError before any work
    build_plan: Callable  # (spec, fingerprints) -> Plan
    analyse: Callable  # (ctx, plan, job) -> result dict; writes tables/ and report.html


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
