"""A study's plan: a DAG of jobs, each identified by a content hash of what it computes.

A job's parameters are a frozen pydantic model, one class per job kind (`JobParams`), or a plain mapping for
engine-level tools and tests. The hash covers the job's kind, its parameters (settings, data fingerprints,
model) and the ids of the jobs it depends on, so changing a training setting changes that training job's id
and every evaluation downstream of it, while unrelated jobs keep their ids and stay done.

The hashing policy lives here and only here (`hashed_params`): a job kind declares which of its fields are
*cache-neutral* — they change how fast or how often, not what is computed (`compile`, `log_every`, …) — and
those are left out of the id, so changing them re-runs nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

# bump when a job's stored result changes meaning, to invalidate old results
# (2: typed job parameters, issue #23 — every study re-runs once)
SCHEMA = 2


class JobParams(BaseModel):
    """Base of every job kind's parameters: frozen and strict. `cache_neutral` lists dotted paths of fields
    (e.g. "train.compile") that are left out of the job id."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    cache_neutral: ClassVar[tuple[str, ...]] = ()


def content_hash(payload: Any, n: int = 16) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def file_fingerprint(path: str | Path) -> str:
    """sha256 of a data file's bytes (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def params_json(params: JobParams | Mapping[str, Any]) -> dict[str, Any]:
    """A job's parameters as plain JSON-ready data (what the store records and trackers log)."""
    if isinstance(params, BaseModel):
        return params.model_dump(mode="json")
    return json.loads(json.dumps(dict(params), default=str))


def hashed_params(params: JobParams | Mapping[str, Any]) -> dict[str, Any]:
    """What a job id covers: its parameters without the kind's cache-neutral fields."""
    data = params_json(params)
    for path in getattr(params, "cache_neutral", ()):
        *parents, leaf = path.split(".")
        node = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return data


@dataclass(frozen=True)
class Job:
    """One unit of work. `params`: the kind's JobParams (or a JSON-ready mapping); `deps` are job ids."""

    kind: str
    name: str
    params: Any
    deps: tuple[str, ...] = ()
    id: str = field(init=False)

    def __post_init__(self) -> None:
        payload = [SCHEMA, self.kind, hashed_params(self.params), sorted(self.deps)]
        object.__setattr__(self, "id", f"{self.kind}-{content_hash(payload)}")


class Plan:
    """Jobs in insertion order, which callers keep topological (dependencies are added first).

    A study with training-seed replicates (`train.seeds`) builds its plan once per seed and merges them
    (`studies.contract.build_study_plan`): `seed_of[id]` is the seed of a job that exists once per seed
    (a training run and everything downstream of it) and `replica_of[id]` the id of its first seed's
    counterpart; jobs every seed shares (the base model's evaluations, dataset statistics) are in neither.
    """

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.seed_of: dict[str, int] = {}
        self.replica_of: dict[str, str] = {}

    def add(
        self,
        kind: str,
        name: str,
        params: JobParams | Mapping[str, Any],
        deps: list[str] | tuple[str, ...] = (),
    ) -> str:
        missing = [d for d in deps if d not in self.jobs]
        assert not missing, f"dependencies must be added first: {missing}"
        job = Job(kind, name, params, tuple(deps))
        self.jobs.setdefault(job.id, job)
        return job.id

    def __iter__(self):
        return iter(self.jobs.values())

    def __len__(self) -> int:
        return len(self.jobs)

    def by_kind(self, kind: str) -> list[Job]:
        return [j for j in self.jobs.values() if j.kind == kind]
