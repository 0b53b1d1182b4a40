"""Benchmarks are scripts of the source checkout (`make bench`), not a `spillover` subcommand: the scripts
are not in the wheel, so an installed `spillover bench` could only refuse to run."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

from spillover.cli import main

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))


def test_cli_help_does_not_list_bench(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "bench" not in out
    assert "run" in out and "eval" in out


def test_bench_subcommand_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "all"])
    assert exc.value.code == 2
    assert "invalid choice: 'bench'" in capsys.readouterr().err


def test_extra_arguments_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["models", "--bogus"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_make_bench_runs_every_script():
    """`make bench` runs every side-by-side script of benchmarks/ (train_lora_embedded measures spillover
    alone and study_memory one study's per-job memory; both are run by hand)."""
    makefile = (BENCHMARKS.parent / "Makefile").read_text()
    ran = {s for s in SCRIPTS if f"benchmarks/{s}" in makefile}
    assert ran == set(SCRIPTS) - {"train_lora_embedded.py", "study_memory.py"}


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_script_help_runs(script, monkeypatch, capsys):
    """Each script parses its arguments as `python benchmarks/<script> --help` does: the folder first on
    sys.path (for `_machine`), run as __main__. In-process: its imports must resolve against today's
    library, and no competitor (trl, lm-eval) is imported before the arguments are parsed."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setattr(sys, "argv", [str(BENCHMARKS / script), "--help"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(BENCHMARKS / script), run_name="__main__")
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out
