"""The mixture study (methods.md §5): spec.py, plan.py, handlers.py, analysis.py, sections.py."""

from spillover.studies.contract import register_kind

register_kind("mixture", "Mixture study", __name__, spec="MixtureStudySpec")
