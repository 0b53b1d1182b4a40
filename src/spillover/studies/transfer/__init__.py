"""The transfer study (methods.md §1): spec.py, plan.py, handlers.py, analysis.py, sections.py."""

from spillover.studies.contract import register_kind

register_kind("transfer", "Transfer study", __name__, spec="TransferStudySpec")
