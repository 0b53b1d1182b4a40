"""Bad lm_eval: targets through `spillover eval`: lm-eval missing, an include folder that is not one, an
unknown task (named, with where it was looked for), a task whose data cannot load. Exit 2, one message,
no model loaded, nothing written."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from tests.bad_input.conftest import expect_rejected

REPO = Path(__file__).resolve().parents[2]
TASKS_DIR = REPO / "tests" / "fixtures" / "lm_eval_tasks"


def _eval(tmp_path, model_dir, *extra: str) -> list[str]:
    return ["eval", "--model", str(model_dir), "--out", str(tmp_path / "out"), *extra]


def test_lm_eval_not_installed(tmp_path, tiny_model_dir, no_model_loading, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a)
    )
    argv = _eval(tmp_path, tiny_model_dir, "--tasks", "lm_eval:spillover_sst2_mc")
    expect_rejected(argv, tmp_path / "out", capsys, "lm_eval:", "pip install 'spillover[lm-eval]'")


def test_include_folder_missing(tmp_path, tiny_model_dir, no_model_loading, capsys):
    missing = tmp_path / "no-such-dir"
    argv = _eval(tmp_path, tiny_model_dir, "--tasks", "sst2", "--lm-eval-include", str(missing))
    expect_rejected(argv, tmp_path / "out", capsys, "lm_eval_include", str(missing), "not a folder")


def test_task_data_that_does_not_load(tmp_path, tiny_model_dir, no_model_loading, capsys):
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed")
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "broken.yaml").write_text(
        "task: broken_local\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {tmp_path / 'absent.jsonl'}\ntest_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{input}}"\ndoc_to_choice: ["a", "b"]\ndoc_to_target: 0\n'
    )
    argv = _eval(
        tmp_path, tiny_model_dir, "--tasks", "lm_eval:broken_local", "--lm-eval-include", str(folder)
    )
    expect_rejected(argv, tmp_path / "out", capsys, "lm-eval task 'broken_local'", "could not be built")


@pytest.mark.integration  # an unknown name indexes lm-eval's ~15,000 own task YAMLs (~10 s)
def test_unknown_task_names_where_it_looked(tmp_path, tiny_model_dir, no_model_loading, capsys):
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed")
    argv = _eval(tmp_path, tiny_model_dir, "--tasks", "lm_eval:spillover_sst2_mx")
    argv += ["--lm-eval-include", str(TASKS_DIR)]
    expect_rejected(
        argv,
        tmp_path / "out",
        capsys,
        "unknown lm-eval task 'spillover_sst2_mx'",
        "did you mean 'lm_eval:spillover_sst2_mc'",
        str(TASKS_DIR),
        "lm-eval",
    )


def test_probing_an_lm_eval_task_during_training_is_refused(
    tmp_path, tiny_model_dir, no_model_loading, capsys
):
    config = tmp_path / "train.yaml"
    config.write_text(f"""model: {tiny_model_dir}
tasks: [sst2]
output_dir: {tmp_path / "out"}
eval_every: 2
eval_tasks: [sst2, lm_eval:anything]
""")
    expect_rejected(
        ["train", str(config)], tmp_path / "out", capsys, "eval_tasks: lm_eval:anything", "eval_every"
    )
