"""The pass@1 sandbox: passing and failing programs, time and memory limits, fork bombs, hidden secrets.

The attacks of issue 28 (privileges, /proc, sockets, output files, leftovers, budgets) are in
`test_sandbox_attacks.py`."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest
from tests.evaluation.test_sandbox_attacks import alive_with

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


@pytest.mark.skipif(not Path("/proc").exists(), reason="needs /proc to check for stray processes")
def test_forking_is_capped_and_children_are_killed():
    token = f"{os.getpid()}.{time.monotonic_ns() % 10**6}"  # a unique `sleep` argument to find them by
    program = (
        "import os\n"
        "n = 0\n"
        "try:\n"
        "    for _ in range(200):\n"
        "        if os.fork() == 0:\n"
        f"            os.execv('/bin/sleep', ['sleep', '{token}'])\n"
        "        n += 1\n"
        "except OSError as e:\n"
        "    raise SystemExit(f'forked {n}: {e}')\n"
    )
    result = run_program(program, Limits(timeout=5.0, max_processes=16))
    assert not result.passed and "Resource temporarily unavailable" in result.reason, result.reason
    assert int(result.reason.split("forked ")[1].split(":")[0]) < 16
    time.sleep(0.2)
    assert not alive_with(token), "sleeping children must die with the sample"


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


def test_working_directory_is_fresh_and_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where run_program stages its files
    program = "import os\nassert os.listdir('.') == ['program.py'], os.listdir('.')\n"
    program += "assert os.getcwd() == os.environ['HOME'] == os.environ['TMPDIR']\n"
    program += "open('junk.txt', 'w').write('x')\nopen('/tmp/junk.txt', 'w').write('x')\n"
    assert run_program(program).passed  # the second run would fail if the first one's files were left
    result = run_program(program)
    assert result.passed, result.reason
    assert list(tmp_path.iterdir()) == []


def test_stdin_is_closed():
    result = run_program("import sys\nassert sys.stdin.read() == ''\n", Limits(timeout=5.0))
    assert result.passed, result.reason


@needs_netns
def test_no_network_not_even_to_a_server_on_this_machine():
    import socket

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # the server is reachable
        tcp = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
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
    system = "/etc/hostname" if Path("/etc/hostname").exists() else "/etc/passwd"  # visible, read-only
    before = Path(system).read_bytes()
    attacks = [
        f"import os\nos.remove({str(victim)!r})\n",
        f"open({str(victim)!r}, 'w').write('gone')\n",
        f"import os\nos.truncate({str(victim)!r}, 0)\n",
        f"import os\nos.rename({str(victim)!r}, 'stolen.txt')\n",
        f"open({str(tmp_path / 'new.txt')!r}, 'w').write('x')\n",
        f"open({system!r}, 'a').write('x')\n",
        f"import os\nos.remove({system!r})\n",
        "import shutil\nshutil.rmtree('/tmp', ignore_errors=False)\nshutil.rmtree('/usr')\n",
    ]
    for program in attacks:
        result = run_program(program, Limits(timeout=5.0))
        assert not result.passed and "Error" in result.reason, (program, result.reason)
    assert victim.read_text() == "keep me" and not (tmp_path / "new.txt").exists()
    assert Path(system).read_bytes() == before
    inside = "open('mine.txt', 'w').write('x')\nimport os\nos.remove('mine.txt')\nos.mkdir('d')\n"
    assert run_program(inside).passed  # its own folder stays writable


@pytest.mark.skipif(
    not (LAYERS["landlock_scope"] or LAYERS["namespaces"]), reason="no PID namespace nor Landlock ABI >= 6"
)
def test_processes_outside_the_sandbox_cannot_be_signalled():
    import subprocess

    outsider = subprocess.Popen(["sleep", "30"])
    try:
        result = run_program(
            f"import os, signal\nos.kill({outsider.pid}, signal.SIGKILL)\n", Limits(timeout=5.0)
        )
        # invisible from the sandbox's PID namespace, or (without one) refused by Landlock's scope
        assert not result.passed, result.reason
        assert "No such process" in result.reason or "not permitted" in result.reason, result.reason
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
