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


class StudyProgress:
    """The progress of a whole study: one bar for the study (jobs done / total, elapsed, ETA) and, beneath it,
    the running job's own bar (a training run's optimiser steps); plain lines when `stream` is not a
    terminal (a log file, CI).

    ETA: every job still to run costs the mean duration of the jobs of its kind that ran in this session
    (trainings and evaluations differ by orders of magnitude), or the mean over all kinds while none of its
    kind has run; unknown ("?") until one job has finished. Jobs skipped because an earlier run finished
    them count as done and cost nothing.

    Wiring: `run_study(..., on_start=p.start, on_job=p.job, progress=p.step)`, then `p.close()`.
    """

    def __init__(self, stream=None, clock=None) -> None:
        import sys
        import time

        from rich.console import Console

        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self.console = Console(file=self.stream) if self.interactive else None
        self.clock = clock or time.monotonic
        self.t0 = self.clock()
        self.total = self.finished = 0
        self.pending: dict[str, int] = {}  # job kind -> jobs of that kind not finished yet
        self.durations: dict[str, list[float]] = {}  # job kind -> seconds of the jobs run here
        self.started: dict[str, float] = {}  # job id -> start time
        self._progress: Progress | None = None
        self._study = self._job = None

    # ------------------------------------------------------------------ events from run_study

    def start(self, plan, done: set[str]) -> None:
        """The plan and the ids already done before this run."""
        self.t0 = self.clock()
        self.total = len(plan)
        self.finished = sum(1 for j in plan if j.id in done)
        self.pending = {}
        for j in plan:
            if j.id not in done:
                self.pending[j.kind] = self.pending.get(j.kind, 0) + 1
        if self.interactive:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._study = self._progress.add_task("study", total=self.total, info="")
            self._refresh()

    def job(self, job, event: str) -> None:
        """A job started, is done, failed or is blocked (a dependency failed)."""
        now = self.clock()
        if event == "start":
            self.started[job.id] = now
        else:
            began = self.started.pop(job.id, None)
            if began is not None and event == "done":
                self.durations.setdefault(job.kind, []).append(now - began)
            self.finished += 1
            if self.pending.get(job.kind):
                self.pending[job.kind] -= 1
            self._end_job_bar()
        self._line(event, job.name)
        self._refresh()

    def step(self, event: dict[str, Any]) -> None:
        """The running job's optimiser steps (the training loop's progress events)."""
        if not self.interactive or self._progress is None:
            return
        if self._job is None:
            self._job = self._progress.add_task(
                "  training", total=event.get("total_steps"), info="", completed=0
            )
        loss = event.get("loss", float("nan"))
        self._progress.update(
            self._job,
            completed=event["step"],
            info=f"loss {loss:.4f}  {event.get('tokens_per_s', 0.0):.0f} tok/s",
        )

    def close(self) -> None:
        if self._progress is not None:
            self._refresh()
            self._progress.stop()
            self._progress = None

    # ------------------------------------------------------------------ figures

    def elapsed(self) -> float:
        return self.clock() - self.t0

    def eta(self) -> float | None:
        """Seconds until every pending job is done (see the class doc), or None while unknown."""
        runs = [d for ds in self.durations.values() for d in ds]
        if not runs:
            return None if any(self.pending.values()) else 0.0
        overall = sum(runs) / len(runs)
        left = 0.0
        for kind, n in self.pending.items():
            mine = self.durations.get(kind)
            left += n * (sum(mine) / len(mine) if mine else overall)
        running = [self.clock() - t for t in self.started.values()]
        return max(0.0, left - sum(running))

    def summary(self) -> str:
        eta = self.eta()
        return (
            f"{self.finished}/{self.total} jobs · {_clock(self.elapsed())} elapsed · "
            f"ETA {'?' if eta is None else _clock(eta)}"
        )

    # ------------------------------------------------------------------ output

    def _line(self, event: str, name: str) -> None:
        if self.interactive and self._progress is not None:
            style = {"start": "cyan", "done": "green", "failed": "bold red", "blocked": "yellow"}[event]
            self._progress.console.print(f"[{style}]{event:>7}[/] {name}", highlight=False)
        else:
            print(f"{event:>7} {name}  [{self.summary()}]", file=self.stream, flush=True)

    def _refresh(self) -> None:
        if self._progress is not None and self._study is not None:
            eta = self.eta()
            info = f"{_clock(self.elapsed())} elapsed · ETA {'?' if eta is None else _clock(eta)}"
            self._progress.update(self._study, completed=self.finished, info=info)

    def _end_job_bar(self) -> None:
        if self._progress is not None and self._job is not None:
            self._progress.remove_task(self._job)
            self._job = None


def _clock(seconds: float) -> str:
    """h:mm:ss."""
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
