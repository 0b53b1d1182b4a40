"""The generalization study (methods.md §2): spec.py, plan.py, handlers.py, analysis.py, sections.py."""

from __future__ import annotations

from spillover.studies import STUDIES
from spillover.studies.contract import StudyKind


@STUDIES.register("generalization")
def kind() -> StudyKind:
    from spillover.studies.generalization import analysis, handlers, plan, sections, spec

    return StudyKind(
        name="generalization",
        title="Generalization study",
        spec=spec.GeneralizationStudySpec,
        check=spec.check_study,
        build_plan=plan.build_plan,
        analyse=analysis.analyse,
        sections=sections.sections,
        handlers=handlers.HANDLERS,
    )
