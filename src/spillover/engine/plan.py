"""A study's plan: a DAG of jobs, each identified by a content hash of what it computes.

The hash covers the job's kind, its resolved parameters (settings, data fingerprints, model) and the ids
of the jobs it depends on, so changing a training setting changes that training job's id and every
evaluation downstream of it, while unrelated jobs keep their ids and stay done.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = 1  # bump when a job's stored result changes meaning, to invalidate old results


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


@dataclass(frozen=True)
class Job:
    """One unit of work. `params` must be JSON-serialisable; `deps` are job ids."""

    kind: str
    name: str
    params: dict[str, Any]
    deps: tuple[str, ...] = ()
    id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "id", f"{self.kind}-{content_hash([SCHEMA, self.kind, self.params, sorted(self.deps)])}"
        )


class Plan:
    """Jobs in insertion order, which callers keep topological (dependencies are added first)."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}

    def add(
        self, kind: str, name: str, params: dict[str, Any], deps: list[str] | tuple[str, ...] = ()
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
