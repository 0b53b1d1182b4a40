"""Two `spillover run`s on one study folder at the same time share the work through the store's claims:
each job runs in exactly one of them, both succeed, and the folder ends with the uninterrupted run's results."""

from __future__ import annotations

import re
import subprocess
from collections import Counter

import pytest
from tests.studies.crash_support import SETTINGS, assert_same_results, command, env, plan_of, run_reference

pytestmark = pytest.mark.integration


def test_two_concurrent_runs_split_the_jobs_and_end_with_the_reference_results(make_study):
    reference = run_reference(make_study)
    study = make_study("concurrent", **SETTINGS)
    out, plan = study.parent / "out", plan_of(study)
    procs = [
        subprocess.Popen(
            command(study),
            cwd=study.parent,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    logs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stdout + stderr[-3000:]
        logs.append(stderr)
    # "  start NAME  [k/n jobs · elapsed · ETA]": the progress line of a run whose stderr is not a terminal
    started = [re.findall(r"^\s*start (.+?)(?:  \[\d+/\d+ jobs .*\])?$", log, flags=re.M) for log in logs]
    assert Counter(name for names in started for name in names) == Counter({j.name: 1 for j in plan}), started
    assert all(started), f"both runs should have run jobs: {started}"
    assert_same_results(out, reference, plan)
