"""The tradeoff study (methods.md §4): spec.py, plan.py, handlers.py (`tokens`, `codelen`), analysis.py,
sections.py."""

from __future__ import annotations

from spillover.studies import STUDIES
from spillover.studies.contract import StudyKind


@STUDIES.register("tradeoff")
def kind() -> StudyKind:
    from spillover.studies.tradeoff import analysis, handlers, plan, sections, spec

    return StudyKind(
        name="tradeoff",
        title="Forgetting vs specialisation",
        spec=spec.TradeoffStudySpec,
        check=spec.check_inputs,
        build_plan=plan.build_plan,
        analyse=analysis.analyse,
        sections=sections.sections,
        handlers=handlers.HANDLERS,
    )
