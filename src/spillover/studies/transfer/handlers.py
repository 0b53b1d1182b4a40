"""The transfer study's job kinds: only the shared ones (`stats`, `train`, `eval` in studies/jobs.py) and
the shared `analyse`; it adds none of its own."""

from __future__ import annotations

HANDLERS: dict = {}
