"""The study contract holds for a kind defined outside spillover: a tiny `zero_shot` kind (base model on each
target, one table of scores) registered here runs through `spillover run`'s machinery — plan, shared eval
jobs, gather, analysis, tables/ and report.html — touching no file of the package."""

from __future__ import annotations

from typing import Literal

import pandas as pd
from pydantic import Field
from tests.studies.conftest import write_toy_study

from spillover.config import StudySpec
from spillover.engine.plan import JobParams, Plan
from spillover.report.html import Section
from spillover.studies import STUDIES
from spillover.studies.contract import BASE, Analysis, Results, StudyKind
from spillover.studies.jobs import EvalJob
from spillover.studies.run import load_study, run_study


class ZeroShotSpec(StudySpec):
    study: Literal["zero_shot"] = "zero_shot"
    targets: list[str] = Field(min_length=1)

    def task_names(self) -> list[str]:
        return self.targets


class ZeroShotAnalyseJob(JobParams):
    targets: list[str]


class CountJob(JobParams):
    target: str


def build_plan(spec: ZeroShotSpec, fingerprints: dict[str, dict[str, str]]) -> Plan:
    plan, model = Plan(), {"model": spec.model, "precision": spec.precision}
    evals = [
        plan.add(
            "eval", f"eval {t}", EvalJob(**model, label=BASE, target=t, data=fingerprints[t], eval=spec.eval)
        )
        for t in spec.targets
    ]
    counts = [plan.add("count", f"count {t}", CountJob(target=t)) for t in spec.targets]
    plan.add("analyse", "analyse + report", ZeroShotAnalyseJob(targets=spec.targets), deps=[*evals, *counts])
    return plan


def count_job(ctx, plan, job):  # the kind's own job kind: rows in the target's test split
    return {"rows": len(ctx.examples(job.params.target, "test", None))}, []


def analyse(results: Results, p: ZeroShotAnalyseJob) -> Analysis:
    scores = results.long_scores(results.finished("eval"))
    counts = results.finished("count")
    sizes = pd.DataFrame(
        {"target": [j.params.target for j in counts], "rows": [results.result(j)["rows"] for j in counts]}
    )
    return Analysis({"scores": scores, "sizes": sizes}, footer=f"{len(scores)} scores")


def sections(a: Analysis, results: Results) -> list[Section]:
    return [Section("scores", "Zero-shot scores", tables=[("Scores", a.tables["scores"])])]


@STUDIES.register("zero_shot")
def zero_shot_kind() -> StudyKind:
    return StudyKind(
        name="zero_shot",
        title="Zero-shot study",
        spec=ZeroShotSpec,
        check=lambda spec, tasks, load: None,
        build_plan=build_plan,
        analyse=analyse,
        sections=sections,
        handlers={"count": count_job},
    )


def test_a_kind_defined_outside_the_package_runs_end_to_end(tmp_path, tiny_model_dir):
    study = write_toy_study(tmp_path, tiny_model_dir, sources="[toy_a]")
    text = study.read_text().replace("study: transfer", "study: zero_shot")
    keep = [line for line in text.splitlines() if not line.startswith(("sources:", "train:", "stats:"))]
    study.write_text("\n".join(keep) + "\n")
    summary, out = run_study(*load_study(study))
    assert summary.ok, summary.failed
    scores = pd.read_csv(out / "tables" / "scores.csv")
    assert sorted(set(scores["target"])) == ["toy_a", "toy_b", "toy_gen"]
    by_target = scores.groupby("target")["metric"].apply(sorted).to_dict()  # classification: 3 metrics
    assert by_target["toy_a"] == ["accuracy", "balanced_accuracy", "macro_f1"]
    assert len(by_target["toy_gen"]) == 1
    beside = scores[scores["metric"].isin(["macro_f1", "balanced_accuracy"])]
    assert list(beside.columns) == ["model", "target", "metric", "value", "n", "ci_low", "ci_high"]
    assert ((beside["ci_low"] <= beside["value"]) & (beside["value"] <= beside["ci_high"])).all()
    own_n = scores[scores["metric"] == "accuracy"].set_index("target")["n"]
    assert (
        beside["value"].between(0, 1).all()
        and (beside["n"].to_numpy() == own_n[beside["target"]].to_numpy()).all()
    )
    assert set(scores["model"]) == {BASE}
    sizes = pd.read_parquet(out / "tables" / "sizes.parquet")
    assert dict(zip(sizes["target"], sizes["rows"], strict=True)) == {"toy_a": 8, "toy_b": 8, "toy_gen": 6}
    assert "Zero-shot scores" in (out / "report.html").read_text()


def test_kinds_are_found_by_folder_name():
    assert {"transfer", "generalization", "tradeoff", "mixture", "multitask"} <= set(STUDIES.names())
