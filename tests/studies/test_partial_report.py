"""A failed base evaluation still leaves a report (issue #28, item 11): the analysis cannot compute Δ without
the base row, so the report shows every stored score and why; the analyse job is recorded failed with that
reason, and a re-run after the fix completes the study."""

from __future__ import annotations

from spillover.engine.store import Store
from spillover.studies import jobs
from spillover.studies.contract import BASE
from spillover.studies.run import load_study, run_study


def test_a_failed_base_evaluation_renders_a_partial_report(make_study, monkeypatch):
    study = make_study(sources="[toy_a]", targets="[toy_a]")
    real = jobs.SHARED_HANDLERS["eval"]

    def base_fails(ctx, plan, job):
        if job.params.label == BASE:
            raise RuntimeError("simulated base failure")
        return real(ctx, plan, job)

    monkeypatch.setitem(jobs.SHARED_HANDLERS, "eval", base_fails)
    summary, out = run_study(*load_study(study))
    assert not summary.ok
    html = (out / "report.html").read_text()
    assert "Partial results" in html and "could not run" in html
    store = Store(out)
    try:
        errors = {j["kind"]: j["error"] or "" for j in store.jobs() if j["status"] == "failed"}
    finally:
        store.close()
    assert "simulated base failure" in errors["eval"] and "analyse" in errors
    monkeypatch.setitem(jobs.SHARED_HANDLERS, "eval", real)
    fixed, _ = run_study(*load_study(study))
    assert fixed.ok
    assert "Partial results" not in (out / "report.html").read_text()
