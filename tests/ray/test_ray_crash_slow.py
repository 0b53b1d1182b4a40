"""`spillover run --executor ray` killed with SIGKILL mid-run (the driver, with its own local Ray instance),
then re-run: the second run skips what finished and ends with exactly the local executor's results."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from tests.ray.test_ray_study import SETTINGS, _run
from tests.studies.crash_support import assert_same_results, done, running

from spillover.studies.run import load_study, prepare

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_sigkill_of_a_ray_run_then_rerun_equals_the_local_run(make_study):
    _, reference = _run(make_study("local", **SETTINGS), "local")
    study = make_study("crashed", **SETTINGS)
    out, plan = study.parent / "out", prepare(*load_study(study))[1]
    command = [
        sys.executable,
        "-m",
        "spillover.cli",
        "run",
        str(study),
        "--executor",
        "ray",
        "--threads",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = study.parent / "killed.log"
    with log.open("w") as err:
        proc = subprocess.Popen(command, env=env, stdout=err, stderr=err)
        try:  # kill once a training job is done and other jobs are in flight
            deadline = time.monotonic() + 300
            trains = {j.id for j in plan.by_kind("train")}
            while not (trains & done(out) and running(out)):
                assert proc.poll() is None, f"the run ended before the kill point:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    finished = done(out)
    assert finished and len(finished) < len(plan)

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr[-3000:]
    assert f"{len(finished)} already done" in rerun.stdout
    assert_same_results(out, reference, plan)
