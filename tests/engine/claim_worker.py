"""An executor process for the concurrency tests: `python claim_worker.py STORE LOG [HANG_JOB]` runs the
synthetic plan below with `run_local` on the store at STORE. Each job appends "pid name" to LOG (one
O_APPEND write: lines from concurrent workers never interleave) and sleeps a little; the job named
HANG_JOB blocks forever instead (the test kills the worker while it holds that job's claim).
The worker starts only when the file LOG.go exists, so the test can start several at the same moment."""

from __future__ import annotations

import os
import sys
import time

from spillover.engine.executors import run_local
from spillover.engine.plan import Job, Plan
from spillover.engine.store import Store

WORK_S = 0.1


def make_plan() -> Plan:
    """Two chains of dependent jobs, independent singles, and a summary over everything: 14 jobs."""
    plan = Plan()
    ends = []
    for chain in ("a", "b"):
        prev: list[str] = []
        for i in range(4):
            prev = [plan.add("step", f"{chain}{i}", {"chain": chain, "i": i}, prev)]
        ends += prev
    singles = [plan.add("single", f"s{i}", {"i": i}) for i in range(5)]
    plan.add("analyse", "summary", {}, ends + singles)
    return plan


def runner(log_path: str, hang: str | None):
    def run(job: Job):
        if job.name == hang:
            while True:
                time.sleep(1)
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{os.getpid()} {job.name}\n".encode())
        finally:
            os.close(fd)
        time.sleep(WORK_S)
        score = {
            "model": job.name,
            "target": "t",
            "metric": "m",
            "value": float(len(job.name)),
            "n": 1,
            "ci_low": 0.0,
            "ci_high": 1.0,
        }
        return {"name": job.name}, [score]

    return run


def main(root: str, log_path: str, hang: str | None = None) -> int:
    """Announces itself (LOG.ready.<pid>), waits for LOG.go, then runs: concurrent workers start together."""
    open(f"{log_path}.ready.{os.getpid()}", "w").close()
    while not os.path.exists(f"{log_path}.go"):
        time.sleep(0.01)
    store = Store(root)
    try:
        summary = run_local(make_plan(), store, runner(log_path, hang), poll=0.05)
    finally:
        store.close()
    print(f"done={len(summary.done)} skipped={len(summary.skipped)}", flush=True)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
