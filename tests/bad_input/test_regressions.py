"""Regressions: one focused test per validation bug the bad-input properties (test_properties.py) found."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from tests.bad_input.conftest import expect_rejected, jsonl_rows, read_yaml, to_csv, train_config, write_yaml

# ---- regressions: one focused test per bug the properties found -------------------------------------------


def _run_study(folder: Path, capsys, *needles, edit=None) -> str:
    """Apply `edit(spec_dict)` to the toy study, run it, expect a clean rejection naming `needles`."""
    if edit is not None:
        spec = read_yaml(folder / "study.yaml")
        edit(spec)
        write_yaml(folder / "study.yaml", spec)
    return expect_rejected(["run", str(folder / "study.yaml")], folder / "out", capsys, *needles)


def _run_train(folder: Path, model_dir, capsys, *needles, **changes) -> str:
    cfg = train_config(folder, str(model_dir))
    write_yaml(cfg, {**read_yaml(cfg), **changes})
    return expect_rejected(["train", str(cfg)], folder / "out", capsys, *needles)


def test_study_checks_every_row_its_jobs_read(base_dir, capsys):
    """Was: only 4 train rows and 1 test row were checked; a bad row 10 failed every job after loading."""
    folder = base_dir()
    rows = jsonl_rows(folder / "a_train.jsonl")
    rows[10]["output"] = "neutral"  # within train.limit (16)
    (folder / "a_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _run_study(folder, capsys, "a_train.jsonl:11", "label 'neutral'")
    folder = base_dir()
    rows = jsonl_rows(folder / "g_test.jsonl")
    del rows[4]["input"]  # within eval.limit (6)
    (folder / "g_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _run_study(folder, capsys, "g_test.jsonl:5", "missing field 'input'")


def test_train_checks_every_evaluation_row_before_training(base_dir, tiny_model_dir, capsys):
    """Was: `spillover train` checked one test row of each eval task; a bad row 2 failed after training."""
    folder = base_dir()
    rows = jsonl_rows(folder / "b_test.jsonl")
    rows[1]["output"] = "tennis"
    (folder / "b_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _run_train(folder, tiny_model_dir, capsys, "b_test.jsonl:2", "label 'tennis'")


def test_study_with_shots_needs_every_targets_train_split(base_dir, capsys):
    folder = base_dir()
    tasks = read_yaml(folder / "tasks.yaml")
    del tasks["tasks"][2]["train"]  # toy_gen: a target only
    write_yaml(folder / "tasks.yaml", tasks)
    _run_study(folder, capsys, "toy_gen", "no train split", edit=lambda s: s["eval"].update(shots=1))


@pytest.mark.parametrize(
    ("regularizers", "objective_params", "needles"),
    [
        (
            {"l2_to_init": {"wieght": 0.1}},
            {},
            ("regularizers", "unknown parameter 'wieght'; allowed: weight"),
        ),
        ({"l2_to_init": {}}, {}, ("regularizers", "missing parameter(s) weight")),
        ({"l2_to_init": {"weight": -0.5}}, {}, ("weight = -0.5", "greater than or equal to 0")),
        ({"l2_to_init": {"weight": math.nan}}, {}, ("weight = nan", "finite")),
        ({"l2_to_init": {"weight": "big"}}, {}, ("weight = 'big'",)),
        ({}, {"tau": 1.0}, ("objective_params", "objective 'cross_entropy': unknown parameter 'tau'")),
    ],
)
def test_objective_and_regularizer_parameters_are_checked_before_loading(
    base_dir, tiny_model_dir, capsys, regularizers, objective_params, needles
):
    """Was: a TypeError/NaN loss inside the training loop, after the model was loaded and out/ created."""
    _run_train(
        base_dir(),
        tiny_model_dir,
        capsys,
        "train.yaml",
        *needles,
        regularizers=regularizers,
        objective_params=objective_params,
    )
    _run_study(
        base_dir(),
        capsys,
        "train.regularizers" if regularizers else "train.objective_params",
        edit=lambda s: s["train"].update(regularizers=regularizers, objective_params=objective_params),
    )


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_seed_outside_numpys_range_is_rejected(base_dir, tiny_model_dir, capsys, seed):
    """Was: numpy's `Seed must be between 0 and 2**32 - 1` after the model was loaded."""
    _run_train(base_dir(), tiny_model_dir, capsys, f"seed = {seed}", seed=seed)
    _run_study(base_dir(), capsys, f"eval.seed = {seed}", edit=lambda s: s["eval"].update(seed=seed))
    _run_study(base_dir(), capsys, f"seed = {seed}", edit=lambda s: s.update(seed=seed))


def test_unknown_device_is_rejected(base_dir, tiny_model_dir, capsys):
    """Was: torch's RuntimeError traceback (`train`), and out/ created first (`run`)."""
    _run_train(base_dir(), tiny_model_dir, capsys, "device = 'gpu0'", device="gpu0")
    _run_study(base_dir(), capsys, "device = 'tpu'", edit=lambda s: s.update(device="tpu"))


def test_study_with_a_missing_local_model_is_rejected_up_front(base_dir, capsys):
    """Was: every job failed (exit 1) and out/ with results.db was left behind."""
    _run_study(
        base_dir(),
        capsys,
        "model folder not found: /no/such/model",
        edit=lambda s: s.update(model="/no/such/model"),
    )


def test_study_tasks_file_that_is_not_a_string_is_rejected(base_dir, capsys):
    """Was: `TypeError: expected str, bytes or os.PathLike object, not int` traceback."""
    _run_study(base_dir(), capsys, "tasks_file = 5", edit=lambda s: s.update(tasks_file=5))


def test_empty_output_dir_is_rejected_and_the_working_folder_untouched(
    base_dir, capsys, monkeypatch, tmp_path
):
    """Was: `output_dir: ''` ran the study in the current folder (study.yaml and results.db written there)."""
    monkeypatch.chdir(tmp_path)
    _run_study(base_dir(), capsys, "output_dir = ''", edit=lambda s: s.update(output_dir=""))
    assert list(tmp_path.iterdir()) == []


def test_empty_lora_target_modules_is_rejected(base_dir, tiny_model_dir, capsys):
    """Was: peft's ValueError traceback after the model was loaded and out/config.yaml written."""
    _run_train(base_dir(), tiny_model_dir, capsys, "lora.target_modules = []", lora={"target_modules": []})


@pytest.mark.parametrize(
    ("transforms", "needles"),
    [
        ([{"name": "mislabel", "fraction": "half"}], ("sources.0.transforms", "fraction = 'half'")),
        ([{"name": ["mislabel"]}], ("sources.0.transforms", "needs a `name`")),
        ([{"name": "rebalance", "distribution": {"negative": math.nan}}], ("distribution", "finite")),
        ([{"name": "subsample", "n": 4, "replace": "yes"}], ("replace = 'yes'",)),
        ([{"name": "subsample", "n": 100}], ("sources[0] (task 'toy_a') transforms", "n=100")),
    ],
)
def test_transform_parameters_are_type_checked(base_dir, capsys, transforms, needles):
    """Was: TypeError / ValueError tracebacks (`'<=' not supported`, unhashable list, math.floor(nan))."""
    _run_study(
        base_dir(),
        capsys,
        "study.yaml" if "sources.0" in needles[0] else needles[0],
        *needles,
        edit=lambda s: s.update(sources=[{"task": "toy_a", "transforms": transforms}]),
    )


def test_duplicate_key_in_a_nested_section_names_both_lines(base_dir, capsys):
    """Was: PyYAML silently kept the last value."""
    folder = base_dir()
    (folder / "study.yaml").write_text(
        (folder / "study.yaml").read_text() + "analysis:\n  n_boot: 20\n  n_boot: 30\n"
    )
    _run_study(folder, capsys, "key 'n_boot' is given twice (first on line")


@pytest.mark.parametrize(
    ("how", "needles"),
    [
        ("huge_field", ("a_train.csv:2", "field larger than field limit")),
        ("ragged", ("a_train.csv:3", "does not have the header's 3 columns")),
        ("directory", ("not a file",)),
    ],
)
def test_csv_problems_name_the_file_and_line(base_dir, capsys, how, needles):
    """Was: csv.Error / IsADirectoryError tracebacks, or silently shifted columns."""
    folder = base_dir()
    path = to_csv(folder, "a_train")
    header, first, second, *rest = path.read_text().splitlines(keepends=True)
    if how == "huge_field":
        path.write_text(header + f'a1,"{"y" * 200_000}",positive\n' + second + "".join(rest))
    elif how == "ragged":
        path.write_text(header + first + second.rstrip("\n") + ",extra\n" + "".join(rest))
    else:
        path.unlink()
        path.mkdir()
    _run_study(folder, capsys, *needles)


def test_jsonl_strings_may_hold_unicode_line_separators(base_dir):
    """Was: str.splitlines() cut a valid row at U+2028 / U+0085 / \\x1c and reported invalid JSON."""
    from spillover.data.tasks import load_examples, load_task_file

    folder = base_dir()
    text = "a\u2028b\u2029c\x85d\x1ce\x0bf"
    rows = jsonl_rows(folder / "g_test.jsonl")
    rows[0]["input"] = text
    (folder / "g_test.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    examples = load_examples(load_task_file(folder / "tasks.yaml")["toy_gen"], "test")
    assert examples[0].text == text and len(examples) == len(rows)


@pytest.mark.parametrize("template", ["{input} {", "{input}}", "{0}", "{input.x} {input}"])
def test_input_template_with_a_stray_brace_is_rejected(base_dir, capsys, template):
    """Was: ValueError/IndexError/KeyError traceback when the first prompt was rendered, inside a job."""
    folder = base_dir()
    tasks = read_yaml(folder / "tasks.yaml")
    tasks["tasks"][2]["input"] = template
    write_yaml(folder / "tasks.yaml", tasks)
    _run_study(
        folder,
        capsys,
        "tasks.yaml: tasks[2]",
        "input = ",
        "placeholder" if template in ("{0}", "{input.x} {input}") else "malformed template",
    )


def test_unknown_study_kind_names_the_file(base_dir, capsys):
    _run_study(
        base_dir(),
        capsys,
        "study.yaml: study = 'trasnfer'",
        "did you mean 'transfer'",
        edit=lambda s: s.update(study="trasnfer"),
    )
