"""Bounded disk for studies: a full fine-tune's model folder is deleted once no job of the plan still needs it.

Which jobs need a model: the jobs that depend on the job that trained it (evaluations, later stages,
fusion), except summary jobs (`analyse`), which read results, never models. When every one of them is done, the trained model is *pruned*: its folders are deleted and the
job keeps its result (scores, losses, timings) and a `PRUNED` note in its folder. LoRA adapters are small
and always kept. `keep_models: true` in the study keeps everything.

A later run whose plan has a pending job that depends on a pruned job (say, evaluation settings changed)
first *restores* it: the pruned job's record and folder are cleared, so the scheduler trains it again
(and, transitively, whatever it needed that was pruned too).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from spillover.engine.plan import Job, Plan
from spillover.engine.scheduler import SUMMARY_KINDS
from spillover.engine.store import Store

log = logging.getLogger(__name__)
PRUNED = "PRUNED"


def model_dirs(folder: Path) -> list[Path]:
    """Full-model folders under a job's folder (a saved model or a delta; not a LoRA adapter)."""
    found = []
    for config in folder.rglob("config.json"):
        d = config.parent
        if not (d / "adapter_config.json").exists() and any(d.glob("*.safetensors")):
            found.append(d)
    return found


def prune_done(plan: Plan, store: Store, candidates: list[Job]) -> list[str]:
    """Prune each candidate that is done, holds a full model and whose dependents are all done."""
    status = {j["id"]: j["status"] for j in store.jobs()}
    dependents: dict[str, list[str]] = {}
    for job in plan:
        for dep in job.deps if job.kind not in SUMMARY_KINDS else ():
            dependents.setdefault(dep, []).append(job.id)
    pruned = []
    for job in candidates:
        if status.get(job.id) != "done" or not dependents.get(job.id):
            continue
        if all(status.get(d) == "done" for d in dependents[job.id]):
            folder = store.job_dir(job.id)
            dirs = model_dirs(folder)
            if dirs:
                (folder / PRUNED).write_text("\n".join(str(d.relative_to(folder)) for d in dirs) + "\n")
                for d in dirs:
                    shutil.rmtree(d)
                pruned.append(job.id)
                log.info("pruned the model of %s (every job that needs it is done)", job.name)
    return pruned


def restore_needed(plan: Plan, store: Store) -> list[str]:
    """Forget every pruned done job that a not-yet-done job of the plan depends on (transitively), so the
    scheduler runs it again; returns their ids."""
    status = {j["id"]: j["status"] for j in store.jobs()}
    forgotten: list[str] = []
    changed = True
    while changed:
        changed = False
        for job in plan:
            if status.get(job.id) == "done" or job.kind in SUMMARY_KINDS:
                continue
            for dep in job.deps:
                if status.get(dep) == "done" and (store.job_dir(dep) / PRUNED).exists():
                    shutil.rmtree(store.job_dir(dep))
                    store.forget(dep)
                    status[dep] = None
                    forgotten.append(dep)
                    changed = True
    if forgotten:
        log.info("re-training %d pruned model(s) that pending jobs need", len(forgotten))
    return forgotten
