"""User-facing errors: one clear message, exit code 2, no traceback (printed at the CLI edge)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SpilloverError(Exception):
    """Bad user input (YAML, data files, names, values). The CLI prints it and exits with code 2."""

    exit_code = 2


def unknown_name_message(kind: str, name: str, available: Iterable[str]) -> str:
    """ "unknown task 'sst'; did you mean 'sst2'? available: a, b, c"."""
    options = sorted(available)
    close = difflib.get_close_matches(name, options, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown {kind} '{name}'{hint} available: {', '.join(options) or '(none)'}"
