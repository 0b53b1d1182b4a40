"""The pass@1 sandbox: passing and failing programs, time and memory limits, fork bombs, hidden secrets."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from spillover.evaluation import confine
from spillover.evaluation.sandbox import Limits, run_program, run_tests

LAYERS = confine.available()
needs_netns = pytest.mark.skipif(not LAYERS["network_namespace"], reason="no network namespaces here")
needs_landlock = pytest.mark.skipif(not LAYERS["landlock_fs"], reason="no Landlock on this kernel")


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
    limits = Limits(timeout=5.0, max_processes=16, writable=(str(tmp_path),))
    result = run_program(program, limits)
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


@needs_netns
def test_no_network_not_even_to_a_server_on_this_machine():
    import socket

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    try:
        tcp = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        assert run_program(tcp, Limits(timeout=5.0, confine=False)).passed  # the test itself can fail
        result = run_program(tcp, Limits(timeout=5.0))
        assert not result.passed and ("Errno" in result.reason or "refused" in result.reason), result.reason
        udp = "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b'x', ('8.8.8.8', 53))\n"
        result = run_program(udp, Limits(timeout=5.0))
        assert not result.passed and "unreachable" in result.reason, result.reason
    finally:
        server.close()


@needs_landlock
def test_files_outside_the_sandbox_cannot_be_deleted_or_written(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    attacks = [
        f"import os\nos.remove({str(victim)!r})\n",
        f"open({str(victim)!r}, 'w').write('gone')\n",
        f"import os\nos.truncate({str(victim)!r}, 0)\n",
        f"import os\nos.rename({str(victim)!r}, 'stolen.txt')\n",
        f"open({str(tmp_path / 'new.txt')!r}, 'w').write('x')\n",
        "import shutil\nshutil.rmtree('/tmp', ignore_errors=False)\n",
    ]
    for program in attacks:
        result = run_program(program, Limits(timeout=5.0))
        assert not result.passed and "Permission denied" in result.reason, (program, result.reason)
    assert victim.read_text() == "keep me" and not (tmp_path / "new.txt").exists()
    inside = "open('mine.txt', 'w').write('x')\nimport os\nos.remove('mine.txt')\nos.mkdir('d')\n"
    assert run_program(inside).passed  # its own folder stays writable


@pytest.mark.skipif(not LAYERS["landlock_scope"], reason="Landlock ABI < 6: no signal scoping")
def test_processes_outside_the_sandbox_cannot_be_signalled():
    import subprocess

    outsider = subprocess.Popen(["sleep", "30"])
    try:
        result = run_program(
            f"import os, signal\nos.kill({outsider.pid}, signal.SIGKILL)\n", Limits(timeout=5.0)
        )
        assert not result.passed and "not permitted" in result.reason, result.reason
        assert outsider.poll() is None
    finally:
        outsider.kill()
        outsider.wait()


def test_secret_reading_program_is_scored_as_a_failure(monkeypatch):
    """A generated solution that 'passes' only by reading the evaluator's token fails."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    program = (
        "import os\nkey = os.environ.get('OPENAI_API_KEY', '')\nassert key.startswith('sk-'), 'no key'\n"
    )
    result = run_tests(program, "")
    assert not result.passed and result.reason == "error: AssertionError: no key"
