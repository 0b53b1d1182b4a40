"""The mixture study (methods.md §5): spec.py, plan.py, handlers.py, analysis.py, sections.py."""

from __future__ import annotations

from spillover.studies import STUDIES
from spillover.studies.contract import StudyKind


@STUDIES.register("mixture")
def kind() -> StudyKind:
    from spillover.studies.mixture import analysis, handlers, plan, sections, spec

    return StudyKind(
        name="mixture",
        title="Mixture study",
        spec=spec.MixtureStudySpec,
        check=spec.check_inputs,
        build_plan=plan.build_plan,
        analyse=analysis.analyse,
        sections=sections.sections,
        handlers=handlers.HANDLERS,
    )
