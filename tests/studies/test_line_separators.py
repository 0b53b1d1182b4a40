"""Line and paragraph separators in data and generations (issue #28, item 7): U+2028, U+2029, U+0085 and "\\r"
in inputs, generation targets and generated text must not break any study kind. Predictions files are JSON
Lines split on "\\n" only (`evaluation.predictions.read_predictions`); `str.splitlines()` cut a row at
these characters and every evaluation of the study failed with a JSONDecodeError."""

from __future__ import annotations

import dataclasses
import json

import pytest
from tests.studies.conftest import write_toy_study
from tests.studies.test_generalization_study import EXTRA_TASK, STUDY
from tests.studies.test_mixture_study import write_mixture_study
from tests.studies.test_multitask_study import write_multitask_study
from tests.studies.test_tradeoff_study import write_tradeoff_study

from spillover.evaluation import evaluate
from spillover.evaluation.predictions import read_predictions
from spillover.studies.run import load_study, run_study

SEPARATORS = "\u2028\u2029\x85\r"


def _generalization(folder, model_dir):
    write_toy_study(folder, model_dir)
    (folder / "tasks.yaml").write_text((folder / "tasks.yaml").read_text() + EXTRA_TASK)
    study = folder / "gen.yaml"
    text = STUDY.format(model=model_dir, out=folder / "out").replace("sizes: [8, 16]", "sizes: [8]")
    study.write_text(text)
    return study


WRITERS = {
    "transfer": lambda folder, model_dir: write_toy_study(folder, model_dir, sources="[toy_a, toy_gen]"),
    "generalization": _generalization,
    "tradeoff": lambda folder, model_dir: write_tradeoff_study(
        folder, model_dir, methods="[{label: ce}]", extra="learning_rates: [0.01]"
    ),
    "mixture": lambda folder, model_dir: write_mixture_study(
        folder, model_dir, "[{name: equal, strategy: equal}]"
    ),
    "multitask": lambda folder, model_dir: write_multitask_study(
        folder, model_dir, extra="baselines: [joint]"
    ),
}


def _with_separators(folder) -> None:
    """Every data row's input gets the separators; generation targets too (labels must stay labels)."""
    for path in folder.glob("*.jsonl"):
        rows = [json.loads(line) for line in path.read_text().split("\n") if line]
        for r in rows:
            r["input"] = f"{SEPARATORS}{r['input']}{SEPARATORS}"
            if path.name.startswith("g_"):
                r["output"] = f"{r['output']}{SEPARATORS}"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


@pytest.mark.integration
@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_separators_in_inputs_targets_and_generations_break_no_study(
    kind, tmp_path, tiny_model_dir, monkeypatch
):
    real = evaluate.generate_for_task

    def generate(*args, **kwargs):  # every generated answer carries the separators too
        prompts, gens = real(*args, **kwargs)
        return prompts, [dataclasses.replace(g, text=f"{SEPARATORS}{g.text}{SEPARATORS}") for g in gens]

    monkeypatch.setattr(evaluate, "generate_for_task", generate)
    study = WRITERS[kind](tmp_path, tiny_model_dir)
    if kind == "tradeoff":  # its writer's override lines would repeat a key: keep the last of each
        lines = study.read_text().splitlines()
        study.write_text("\n".join(x for x in lines if not x.startswith("learning_rates: [0.001")) + "\n")
    _with_separators(tmp_path)
    summary, out = run_study(*load_study(study))
    assert summary.ok, summary.failed
    assert (out / "report.html").exists()
    found = [read_predictions(p) for p in (out / "jobs").rglob("predictions*.jsonl")]
    assert found and all(found)
    text = "".join(p.read_text(encoding="utf-8") for p in (out / "jobs").rglob("predictions*.jsonl"))
    assert "\u2028" in text or "\\u2028" in text
