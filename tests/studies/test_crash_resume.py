"""Crash safety: `spillover run` killed with SIGKILL at any point, then re-run, ends with exactly the results
of an uninterrupted run — and what each kill leaves is consistent (intact store, every file a reader
trusts complete and equal to the reference's).

Kills are placed by watching the study folder from outside: when a chosen job is marked running, plus a
seeded-random delay within the time that job took in the reference run. The fast test kills one study
three times (training, evaluation, analysis); the slow test (`make test-slow`, run by CI) runs 20 trials,
each on a fresh copy of the study, spread over the three phases, some killed twice in a row.
See crash_support.py for what is compared.
"""

from __future__ import annotations

import random

import pytest
from tests.studies.crash_support import (
    SETTINGS,
    after,
    assert_consistent_after_kill,
    assert_same_results,
    done,
    job_seconds,
    kill_when,
    phase_now,
    plan_of,
    run_reference,
    run_to_completion,
    running,
)

pytestmark = pytest.mark.integration

TRIALS = 20
AIMED = ("train", "eval", "analyse")  # job kinds the trials aim at, in turn


def test_sigkill_at_three_points_then_rerun_equals_uninterrupted(make_study):
    reference = run_reference(make_study)
    study = make_study("crashed", **SETTINGS)
    out, plan = study.parent / "out", plan_of(study)
    train = plan.by_kind("train")[0]
    train_dir = out / "jobs" / train.id

    # 1. during the first training job, between its checkpoints at steps 2 and 4
    kill_when(study, lambda: (train_dir / "checkpoints" / "step-000002").exists())
    assert phase_now(out) == "train" and not (train_dir / "train_result.json").exists()
    assert_consistent_after_kill(out, reference)

    # 2. during an evaluation of a trained adapter (the re-run first resumes the training)
    adapter_evals = {j.id for j in plan.by_kind("eval") if j.deps}
    stderr = kill_when(study, lambda: bool(adapter_evals & running(out)))
    assert "resuming from" in stderr and "step-000002" in stderr, stderr[-2000:]
    assert train.id in done(out) and phase_now(out) == "eval"
    assert_consistent_after_kill(out, reference)

    # 3. during the analysis
    analyse = plan.by_kind("analyse")[0].id
    kill_when(study, lambda: analyse in running(out))
    assert phase_now(out) == "analysis"
    assert_consistent_after_kill(out, reference)

    run_to_completion(study)
    assert_same_results(out, reference, plan)


@pytest.mark.slow
def test_twenty_sigkills_spread_over_train_eval_and_analysis(make_study):
    """Trial i aims at a random job of kind AIMED[i % 3], killed at a random delay into it; every fourth
    trial is killed a second time during its re-run. Each ends equal to the uninterrupted run."""
    reference = run_reference(make_study)
    seconds = job_seconds(reference)
    hits: list[tuple[int, str, str]] = []  # (trial, aimed-at job, phase the kill hit)
    for trial in range(TRIALS):
        rng = random.Random(trial)
        study = make_study(f"crashed-{trial}", **SETTINGS)
        out, plan = study.parent / "out", plan_of(study)
        aims = [AIMED[trial % 3]] + ([rng.choice(AIMED[1:])] if trial % 4 == 3 else [])
        for kind in aims:
            job = rng.choice(
                [j for j in plan.by_kind(kind) if j.id not in done(out)] or plan.by_kind("analyse")
            )
            delay = rng.uniform(0, 0.9) * seconds[job.name]
            ready = after(lambda j=job.id, o=out: j in running(o), delay)
            if kill_when(study, ready, may_finish=True) is None:
                hits.append((trial, job.name, "finished first"))
                break
            hits.append((trial, job.name, phase_now(out)))
            assert_consistent_after_kill(out, reference)
        run_to_completion(study)
        assert_same_results(out, reference, plan)
    print("\n".join(f"trial {t:2d}: aimed at {name!r}, hit {phase}" for t, name, phase in hits))
    assert {"train", "eval", "analysis"} <= {phase for _, _, phase in hits}, hits
    assert sum(phase != "finished first" for _, _, phase in hits) >= TRIALS, hits
