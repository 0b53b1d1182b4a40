"""The generalization study's job kinds: only the shared ones (`train`, `eval` in studies/jobs.py, its eval
jobs carrying the cell's coordinates) and the shared `analyse`; it adds none of its own."""

from __future__ import annotations

HANDLERS: dict = {}
