"""The command line: listing, and one clear message with exit code 2 for every kind of bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from spillover.cli import main

GOOD = "model: embedded\ntasks: [sst2]\noutput_dir: {out}\n"


def _run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: [unclosed\n", r"cfg\.yaml:2:1: malformed YAML"),
        (GOOD + "learning_rat: 0.1\n", r"unknown key 'learning_rat'; allowed keys: .*learning_rate"),
        (GOOD + "learning_rate: -1\n", r"learning_rate = -1: Input should be greater than 0"),
        (GOOD + "learning_rate: .nan\n", r"learning_rate = nan"),
        (GOOD + "method: qlora\n", r"method = 'qlora': Input should be 'lora' or 'full'"),
        (GOOD + "objective: talrr\n", r"unknown objective 'talrr'"),
        (GOOD.replace("[sst2]", "[sst3]"), r"unknown task 'sst3'; did you mean 'sst2'"),
        ("- just\n- a list\n", r"top level must be a mapping"),
        ("", r"the file is empty"),
    ],
)
def test_bad_train_config_exits_2_with_one_message(tmp_path, capsys, text, message):
    import re

    cfg = tmp_path / "cfg.yaml"
    out = tmp_path / "out"
    cfg.write_text(text.format(out=out) if "{out}" in text else text)
    code, _, err = _run(["train", str(cfg)], capsys)
    assert code == 2
    assert re.search(message, err), err
    assert err.startswith("error: ") and "Traceback" not in err
    assert not out.exists(), "nothing may be written for a bad config"


def test_bad_override(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(GOOD.format(out=tmp_path / "out"))
    code, _, err = _run(["train", str(cfg), "batch_size=0"], capsys)
    assert code == 2 and "batch_size = 0" in err
    code, _, err = _run(["train", str(cfg), "novalue"], capsys)
    assert code == 2 and "is not key=value" in err


def test_eval_unknown_task(capsys):
    code, _, err = _run(["eval", "--tasks", "sst2,nope", "--model", "embedded"], capsys)
    assert code == 2 and "unknown task 'nope'" in err


def test_eval_missing_model_folder(capsys, tmp_path, sentiment_task_file):
    code, _, err = _run(
        [
            "eval",
            "--tasks",
            "toy_sentiment",
            "--tasks-file",
            str(sentiment_task_file),
            "--model",
            str(tmp_path / "no/such"),
        ],
        capsys,
    )
    assert code == 2 and "not found" in err


def test_tasks_list_and_show(capsys, sentiment_task_file):
    code, out, _ = _run(["tasks", "--tasks-file", str(sentiment_task_file)], capsys)
    assert code == 0 and "sst2" in out and "toy_sentiment" in out
    code, out, _ = _run(["tasks", "show", "toy_sentiment", "--tasks-file", str(sentiment_task_file)], capsys)
    assert code == 0 and "Review: a" in out and "[target]" in out


def test_models_lists_embedded(capsys):
    code, out, _ = _run(["models"], capsys)
    assert code == 0 and "embedded" in out


@pytest.mark.integration
def test_console_script_exit_code_and_no_traceback(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("tasks: [sst2]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "spillover.cli", "train", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "missing required key 'output_dir'" in proc.stderr and "Traceback" not in proc.stderr
