"""The multitask study (methods.md §3): CPI-FT against joint and multi-stage SFT, and a sequential
forgetting test — spec.py, plan.py, handlers.py (its own job kinds), states.py (the study's models for
CPI-FT), analysis.py, sections.py. The method itself lives in the library (`training.cpi`, `merging.fuse`)."""

from spillover.studies.contract import register_kind

register_kind("multitask", "Multitask study (CPI-FT)", __name__, spec="MultitaskStudySpec")
