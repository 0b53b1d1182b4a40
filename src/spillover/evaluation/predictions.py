"""Per-example predictions files (JSON Lines): the one reader every study and tool uses.

Lines are split on "\\n" only. `str.splitlines()` also splits on U+2028, U+2029, U+0085, "\\r" and other
characters that JSON strings may hold unescaped (`json.dumps(..., ensure_ascii=False)` writes them raw), so
a data row containing one would break every reader of the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a predictions file, in order; blank lines are skipped."""
    text = Path(path).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.split("\n") if line.strip()]
