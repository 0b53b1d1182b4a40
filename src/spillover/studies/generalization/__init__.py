"""The generalization study (methods.md §2): spec.py, plan.py, handlers.py, analysis.py, sections.py."""

from spillover.studies.contract import register_kind

register_kind(
    "generalization", "Generalization study", __name__, spec="GeneralizationStudySpec", check="check_study"
)
