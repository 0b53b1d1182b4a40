"""A study run with `--executor ray` on a local 2-CPU Ray instance ends with exactly the local executor's
results, and a Ray run cut short by a crash resumes to the same results.

Exact, not within a tolerance: both executors run the same code on the same model file with one torch
thread per job (the local run sets it; each Ray worker gets `cpus_per_job` = 1), and every job seeds its
own randomness, so which process and in which order a job runs does not change a single bit. The thread
count matters: float reductions may split differently with more threads.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch
from tests.studies.crash_support import assert_same_results

from spillover.cli import main
from spillover.engine.ray_executor import RayOptions
from spillover.studies.run import load_study, prepare, run_study

pytestmark = pytest.mark.integration

# two sources x two targets (+ the base model), 4 training steps each
SETTINGS = {
    "sources": "[toy_a, toy_b]",
    "targets": "[toy_a, toy_gen]",
    "train": "{limit: 16, batch_size: 4, max_steps: 4, learning_rate: 0.05, checkpoint_every: 2}",
}


def _run(study: Path, executor: str):
    kind, spec = load_study(study)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the local jobs' and the analysis' thread count; Ray workers: cpus_per_job
    try:
        return run_study(
            kind, spec, executor=executor, ray=RayOptions(cpus_per_job=1) if executor == "ray" else None
        )
    finally:
        torch.set_num_threads(threads)


def test_ray_executor_gives_the_local_executors_results_and_resumes_after_a_crash(
    ray_cluster, make_study, capsys
):
    _, reference = _run(make_study("local", **SETTINGS), "local")
    study = make_study("ray", **SETTINGS)
    plan = prepare(*load_study(study))[1]
    summary, out = _run(study, "ray")
    assert summary.ok and len(summary.done) == len(plan), summary
    assert_same_results(out, reference, plan)  # every score, table, prediction, training log and adapter

    # a crash of the driver while the second training job and an evaluation of the first ran: both are
    # left `running`, what depends on the second was never started, the analysis not yet redone
    first, second = plan.by_kind("train")
    downstream = [j.id for j in plan if second.id in j.deps]
    redo = [second.id, next(j.id for j in plan if first.id in j.deps), plan.by_kind("analyse")[0].id]
    conn = sqlite3.connect(out / "results.db")
    with conn:
        conn.executemany("UPDATE jobs SET status = 'running' WHERE id = ?", [(j,) for j in redo])
        conn.executemany("DELETE FROM jobs WHERE id = ?", [(j,) for j in downstream])
        conn.executemany("DELETE FROM scores WHERE job_id = ?", [(j,) for j in downstream])
    conn.close()
    again, _ = _run(study, "ray")
    assert again.ok and sorted(again.done) == sorted(redo + downstream)
    assert len(again.skipped) == len(plan) - len(redo) - len(downstream)
    assert_same_results(out, reference, plan)

    # the CLI on the finished study: nothing left to run (and no worker started)
    flags = ["--executor", "ray", "--cpus-per-job", "1", "--threads", str(torch.get_num_threads())]
    capsys.readouterr()
    assert main(["run", str(study), *flags]) == 0
    assert f"0 jobs run, {len(plan)} already done, 0 failed, 0 blocked" in capsys.readouterr().out
