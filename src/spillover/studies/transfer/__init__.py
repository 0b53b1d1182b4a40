"""The transfer study (methods.md §1): spec.py, plan.py, handlers.py, analysis.py, sections.py."""

from __future__ import annotations

from spillover.studies import STUDIES
from spillover.studies.contract import StudyKind


@STUDIES.register("transfer")
def kind() -> StudyKind:
    from spillover.studies.transfer import analysis, handlers, plan, sections, spec

    return StudyKind(
        name="transfer",
        title="Transfer study",
        spec=spec.TransferStudySpec,
        check=spec.check_inputs,
        build_plan=plan.build_plan,
        analyse=analysis.analyse,
        sections=sections.sections,
        handlers=handlers.HANDLERS,
    )
