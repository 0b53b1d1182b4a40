"""The tradeoff study (methods.md §4): spec.py, plan.py, handlers.py (`tokens`, `codelen`), analysis.py,
sections.py."""

from spillover.studies.contract import register_kind

register_kind("tradeoff", "Forgetting vs specialisation", __name__, spec="TradeoffStudySpec")
