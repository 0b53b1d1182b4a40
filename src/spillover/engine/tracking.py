"""Optional metrics logging (`report_to: [tensorboard, mlflow]`): each training step's record and each
evaluation score, sent to TensorBoard event files and/or MLflow runs. Off by default.

One run per trained model: a training job's run gets its per-step curves (`train/loss`, `train/lr`,
`train/tokens_per_s`, `train/grad_norm`, objective and regulariser stats) and, later, the scores of its
evaluation jobs (`eval/<target>/<metric>`, at the run's last step) and, with `eval_every`, its probes during
training (`val/<task>/<metric>`, `val/<task>/loss`, from step 0; `evaluation.curves`); the untuned base
model has a run `base` with its scores at step 0.

  TensorBoard  `<output_dir>/tensorboard/<job name>/` (one folder per run). A resumed training job purges
               the events past its checkpoint, so a crash and resume draw one clean curve.
  MLflow       tracking URI from MLFLOW_TRACKING_URI, else `sqlite:///<output_dir>/mlflow.db` (MLflow's own
               default backend; its file store now refuses to work unless MLFLOW_ALLOW_FILE_STORE=true);
               experiment = the output folder's name, run name = job name, params = the job's params
               flattened. A run is found again by its `spillover_job_id` tag, so a resumed job logs into
               the same run, skipping the steps it had logged before the crash (resume is bit-exact).

The training loop is not changed: `Tracker.run(...)` yields a `RunLogger` whose `log_record` is composed
with the CLI's progress callback (`compose`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from spillover.engine.plan import content_hash
from spillover.errors import SpilloverError

log = logging.getLogger(__name__)
SINKS = ("tensorboard", "mlflow")
JOB_TAG = "spillover_job_id"
_NOT_METRICS = frozenset({"step", "total_steps"})
_MAX_PARAM = 6000  # MLflow's limit on a param value's length
_NAME = re.compile(r"[^A-Za-z0-9_.=+-]+")


@dataclass(frozen=True)
class RunSpec:
    """One tracked run. `key`: its stable identity across processes (the training job's id)."""

    name: str
    key: str
    params: dict[str, Any] = field(default_factory=dict)


class Sink(Protocol):
    def log(self, values: dict[str, float], step: int) -> None: ...
    def close(self, ok: bool) -> None: ...


def check_report_to(sinks: Sequence[str], output_dir: str | Path) -> None:
    """Fail before any work when a requested sink cannot be used (its package is missing)."""
    for sink in sinks:
        try:
            _import(sink)
        except ImportError:
            raise SpilloverError(f"report_to: {sink} needs the {sink} package (pip install {sink})") from None
    uri = mlflow_uri(output_dir)
    if "mlflow" in sinks and uri.startswith("sqlite:"):
        try:
            import alembic  # noqa: F401
            import sqlalchemy  # noqa: F401
        except ImportError:
            raise SpilloverError(
                f"report_to: mlflow logs to {uri} by default, which needs sqlalchemy and alembic: pip install "
                "mlflow (the full package, not mlflow-skinny), or set MLFLOW_TRACKING_URI to your tracking server"
            ) from None


def mlflow_uri(output_dir: str | Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(output_dir).resolve() / 'mlflow.db'}"


class RunLogger:
    """Sends metrics to every sink of one run; with no sinks every call does nothing."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks

    def log(self, values: dict[str, float], step: int) -> None:
        with sink_errors("logging"):
            for sink in self.sinks:
                sink.log(values, step)

    def log_record(self, record: dict[str, Any]) -> None:
        """A training loop progress callback: a step record → `train/<key>` scalars at its step."""
        values = {
            f"train/{k}": float(v) for k, v in record.items() if k not in _NOT_METRICS and _is_number(v)
        }
        self.log(values, int(record["step"]))

    def log_scores(self, scores: Sequence[dict[str, Any]], step: int) -> None:
        """Evaluation score rows (model, target, metric, value, ci_low, ci_high) → `eval/<target>/<metric>`."""
        values = {}
        for s in scores:
            name = f"eval/{s['target']}/{s['metric']}"
            values |= {name: s["value"], f"{name}_ci_low": s["ci_low"], f"{name}_ci_high": s["ci_high"]}
        self.log({k: float(v) for k, v in values.items() if _is_number(v)}, step)


class Tracker:
    """The study's sinks (`report_to`); `run(spec)` opens one run on each of them."""

    def __init__(self, sinks: Sequence[str], output_dir: str | Path) -> None:
        unknown = set(sinks) - set(SINKS)
        assert not unknown, f"unknown report_to sinks {unknown}"  # the spec's Literal checked them
        self.sinks, self.output_dir = list(dict.fromkeys(sinks)), Path(output_dir)
        self._mlflow = None

    @contextmanager
    def run(self, spec: RunSpec, training: bool = False) -> Iterator[RunLogger]:
        """`training`: this opens the run of a training job (which may be resuming): its curves restart at
        the first step logged, and the run ends FAILED if the job fails."""
        with sink_errors("opening the run"):
            sinks = [self._open(sink, spec, training) for sink in self.sinks]
        ok = False
        try:
            yield RunLogger(sinks)
            ok = True
        finally:
            with sink_errors("closing the run"):
                for sink in sinks:
                    sink.close(ok)

    def _open(self, sink: str, spec: RunSpec, training: bool) -> Sink:
        if sink == "tensorboard":
            return TensorBoardSink(self.output_dir / "tensorboard" / run_folder(spec.name), training)
        if self._mlflow is None:
            self._mlflow = MlflowRuns(mlflow_uri(self.output_dir), self.output_dir.resolve().name)
        return self._mlflow.open(spec, training)


@contextmanager
def sink_errors(doing: str) -> Iterator[None]:
    """A sink's own exceptions (an unreachable tracking server, a full disk) fail the job, not the study."""
    try:
        yield
    except SpilloverError:
        raise
    except Exception as e:  # MlflowException and the like derive from Exception only
        raise SpilloverError(f"report_to: {doing} failed: {type(e).__name__}: {e}") from e


def base_run(model: str, precision: str) -> RunSpec:
    """The untuned base model's run, shared by every study and training folder that evaluates it."""
    params = {"model": model, "precision": precision}
    return RunSpec("base", f"base-{content_hash(params)}", params)


def compose(*callbacks: Callable[[dict[str, Any]], None] | None) -> Callable[[dict[str, Any]], None] | None:
    """One progress callback calling each given one in turn (None when none is given)."""
    given = [c for c in callbacks if c is not None]
    if len(given) <= 1:
        return given[0] if given else None

    def both(record: dict[str, Any]) -> None:
        for callback in given:
            callback(record)

    return both


def run_folder(name: str) -> str:
    """A job name as a folder name: 'train toy_a+mislabel(fraction=1.0)' → 'train_toy_a+mislabel_fraction=1.0_'."""
    return _NAME.sub("_", name)


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params → {"train.lora.r": "8", ...}; lists as JSON, values cut to MLflow's length limit."""
    out = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out |= flatten(value, f"{name}.")
        else:
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
            out[name] = text[:_MAX_PARAM]
    return out


# ---- sinks ----------------------------------------------------------------------------------------------


class TensorBoardSink:
    """A SummaryWriter opened at the first logged step; with `purge`, events from that step on written by an
    earlier (crashed or superseded) run in the same folder are discarded by TensorBoard."""

    def __init__(self, log_dir: Path, purge: bool) -> None:
        self.log_dir, self.purge, self._writer = log_dir, purge, None

    def log(self, values: dict[str, float], step: int) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir), purge_step=step if self.purge else None)
        for name, value in values.items():
            self._writer.add_scalar(name, value, step)
        self._writer.flush()  # on disk before the next checkpoint: a crash loses no step that resume skips

    def close(self, ok: bool) -> None:
        if self._writer is not None:
            self._writer.close()


class MlflowRuns:
    """One MLflow client and experiment for the study; runs found by their job-id tag or created."""

    def __init__(self, uri: str, experiment: str) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        log.info("mlflow: logging to %s, experiment '%s'", uri, experiment)

    def open(self, spec: RunSpec, training: bool) -> MlflowSink:
        found = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.{JOB_TAG} = '{spec.key}'", max_results=1
        )
        if found:
            run_id = found[0].info.run_id
            if not training:
                return MlflowSink(self.client, run_id, training)
            # a resumed training job re-logs the steps after its checkpoint, bit-identical: skip them
            logged = self.client.get_metric_history(run_id, "train/loss")
            self.client.update_run(run_id, status="RUNNING")
            return MlflowSink(
                self.client, run_id, training, logged_through=max((m.step for m in logged), default=-1)
            )
        run = self.client.create_run(self.experiment_id, run_name=spec.name, tags={JOB_TAG: spec.key})
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in flatten(spec.params).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run.info.run_id, params=params[i : i + 100])
        return MlflowSink(self.client, run.info.run_id, training)


class MlflowSink:
    """Logs into one MLflow run; a training run skips the steps up to `logged_through` (logged before; -1:
    none, so step 0 — the evaluation curves' starting point, `eval_every` — is logged)."""

    def __init__(self, client, run_id: str, training: bool, logged_through: int = -1) -> None:
        self.client, self.run_id = client, run_id
        self.training, self.logged_through = training, logged_through

    def log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        if self.training and step <= self.logged_through:
            return
        now = int(time.time() * 1000)
        metrics = [Metric(name, value, now, step) for name, value in values.items()]
        for i in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])

    def close(self, ok: bool) -> None:
        if ok or self.training:  # a failed score logging does not fail the model's run
            self.client.set_terminated(self.run_id, status="FINISHED" if ok else "FAILED")


def _import(sink: str) -> None:
    if sink == "tensorboard":
        import torch.utils.tensorboard  # noqa: F401  (imports tensorboard and checks its version)
    else:
        import mlflow  # noqa: F401


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
