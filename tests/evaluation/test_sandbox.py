"""The pass@1 sandbox: passing and failing programs, time and memory limits, fork bombs, hidden secrets."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from spillover.evaluation.sandbox import Limits, run_program, run_tests


def test_passing_program():
    result = run_tests("def add(a, b):\n    return a + b", "assert add(2, 3) == 5")
    assert result.passed and result.reason == "ok"


def test_failing_assert_reports_the_last_stderr_line():
    result = run_tests("def add(a, b):\n    return a - b", "assert add(2, 3) == 5, 'add is broken'")
    assert not result.passed
    assert result.reason == "error: AssertionError: add is broken"


def test_syntax_error_fails():
    result = run_tests("def add(a, b) return a + b", "assert add(1, 2) == 3")
    assert not result.passed and result.reason.startswith("error: SyntaxError")


def test_infinite_loop_times_out():
    start = time.monotonic()
    result = run_program("while True:\n    pass\n", Limits(timeout=1.0))
    assert not result.passed and result.reason == "timeout"
    assert time.monotonic() - start < 5


def test_sleeping_program_times_out_on_wall_clock():
    result = run_program("import time\ntime.sleep(60)\n", Limits(timeout=0.5))
    assert result.reason == "timeout" and result.seconds < 3


def test_huge_allocation_fails():
    result = run_program("x = bytearray(8 * 1024 ** 3)\n")
    assert not result.passed and "MemoryError" in result.reason


def test_huge_output_is_capped_by_the_file_size_limit():
    result = run_program("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", Limits(timeout=5.0))
    assert not result.passed and result.reason != "timeout"


def _alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").exists(), reason="needs /proc to check for stray processes")
def test_forking_is_capped_and_children_are_killed(tmp_path):
    pids = tmp_path / "pids"
    program = (
        "import os, time\n"
        "for _ in range(200):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        f"    open({str(pids)!r}, 'a').write(f'{{pid}}\\n')\n"
    )
    result = run_program(program, Limits(timeout=5.0, max_processes=16))
    assert not result.passed and "Resource temporarily unavailable" in result.reason
    children = [int(p) for p in pids.read_text().split()] if pids.exists() else []
    assert len(children) < 16
    time.sleep(0.2)
    assert not any(_alive(p) for p in children), "sleeping children must die with the process group"


def test_fork_bomb_is_contained():
    # only after the bounded version above proved that forking is capped here
    probe = run_program(
        "import os, time\nfor _ in range(64):\n    if os.fork() == 0:\n        time.sleep(5)\n        os._exit(0)\n",
        Limits(timeout=5.0, max_processes=16),
    )
    if probe.passed:
        pytest.skip("RLIMIT_NPROC is not enforced in this environment; not running a real fork bomb")
    start = time.monotonic()
    result = run_program("import os\nwhile True:\n    os.fork()\n", Limits(timeout=2.0, max_processes=16))
    assert not result.passed
    assert time.monotonic() - start < 10


def test_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("SPILLOVER_TEST_SECRET", "hunter2")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    program = (
        "import os\n"
        "assert 'SPILLOVER_TEST_SECRET' not in os.environ\n"
        "assert 'HF_TOKEN' not in os.environ\n"
        "assert 'hunter2' not in repr(os.environ)\n"
        f"assert os.environ['HOME'] != {os.environ.get('HOME', '/root')!r}\n"
        "assert os.getcwd() == os.environ['HOME']\n"
    )
    result = run_program(program)
    assert result.passed, result.reason


def test_working_directory_is_fresh_and_removed():
    program = "import os\nprint(os.getcwd())\nassert sorted(os.listdir('.')) == ['program.py', 'stderr', 'stdout']\n"
    program += "open('junk.txt', 'w').write('x')\nraise SystemExit(os.getcwd())\n"
    result = run_program(program)
    workdir = result.reason.removeprefix("error: ")
    assert workdir.startswith("/") and not os.path.exists(workdir)


def test_stdin_is_closed():
    result = run_program("import sys\nassert sys.stdin.read() == ''\n", Limits(timeout=5.0))
    assert result.passed, result.reason
