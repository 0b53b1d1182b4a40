"""A rich progress bar for the CLI edge; the library only calls `progress(event)` with plain dicts."""

from __future__ import annotations

from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RichProgress:
    """Callable progress sink: `{"step", "total_steps", "loss", "tokens_per_s", ...}` per optimiser step."""

    def __init__(self, description: str = "training") -> None:
        self.description = description
        self._progress: Progress | None = None
        self._task = None

    def __call__(self, event: dict[str, Any]) -> None:
        if self._progress is None:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}  {task.fields[tps]:.0f} tok/s"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            self._progress.start()
            self._task = self._progress.add_task(
                self.description, total=event.get("total_steps"), loss=float("nan"), tps=0.0
            )
        self._progress.update(
            self._task,
            completed=event["step"],
            loss=event.get("loss", float("nan")),
            tps=event.get("tokens_per_s", 0.0),
        )
        if event.get("done") or event["step"] >= (event.get("total_steps") or float("inf")):
            self.close()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
