"""Where spillover keeps its cache (converted models, downloads): $SPILLOVER_HOME or ~/.cache/spillover."""

from __future__ import annotations

import os
from pathlib import Path


def spillover_home() -> Path:
    return Path(os.environ.get("SPILLOVER_HOME") or Path.home() / ".cache" / "spillover")
