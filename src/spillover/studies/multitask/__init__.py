"""The multitask study (methods.md §3): CPI-FT against joint and multi-stage SFT, and a sequential
forgetting test — spec.py, plan.py, handlers.py (its own job kinds), states.py (the study's models for
CPI-FT), analysis.py, sections.py. The method itself lives in the library (`training.cpi`, `merging.fuse`)."""

from __future__ import annotations

from spillover.studies import STUDIES
from spillover.studies.contract import StudyKind


@STUDIES.register("multitask")
def kind() -> StudyKind:
    from spillover.studies.multitask import analysis, handlers, plan, sections, spec

    return StudyKind(
        name="multitask",
        title="Multitask study (CPI-FT)",
        spec=spec.MultitaskStudySpec,
        check=spec.check_inputs,
        build_plan=plan.build_plan,
        analyse=analysis.analyse,
        sections=sections.sections,
        handlers=handlers.HANDLERS,
    )
