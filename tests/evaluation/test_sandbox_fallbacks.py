"""The sandbox's other paths on this machine: without namespaces (the documented fallback: a child
subreaper, a host folder) and as an unprivileged user (user namespaces). Integration tier: each starts
extra interpreters and needs root to stage them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from tests.evaluation.test_sandbox_attacks import LEAVE_DAEMON, PRIVILEGES, alive_with

from spillover.evaluation import confine, sandbox
from spillover.evaluation.sandbox import Limits, run_program

SYSTEM_PYTHON = "/usr/bin/python3"  # reachable by `nobody`, unlike a Python under /root
SRC = str(Path(sandbox.__file__).parents[2])

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="stages other users' processes: needs root"),
    pytest.mark.skipif(not Path("/proc").exists(), reason="Linux only"),
]


@pytest.fixture
def reachable_dir():
    """A fresh folder `nobody` can traverse (pytest's tmp_path lives under a 0700 folder)."""
    path = Path(tempfile.mkdtemp(prefix="spillover-test-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def no_namespaces(monkeypatch, reachable_dir):
    """The launcher as on a host whose kernel refuses new namespaces."""
    have = dict(confine.available(), namespaces=False)
    monkeypatch.setattr(confine, "available", lambda: have)
    monkeypatch.setattr(tempfile, "tempdir", str(reachable_dir))
    return reachable_dir


def test_without_namespaces_an_unreachable_interpreter_fails_closed(no_namespaces):
    result = run_program(PRIVILEGES, Limits(timeout=10.0))
    if not result.passed:  # never run with privileges instead
        assert result.reason.startswith("error: could not confine") and "could not start" in result.reason


@pytest.mark.skipif(not Path(SYSTEM_PYTHON).exists(), reason="no system Python")
def test_without_namespaces_the_child_is_unprivileged_and_leaves_nothing(no_namespaces, monkeypatch):
    monkeypatch.setattr(sys, "executable", SYSTEM_PYTHON)
    result = run_program(PRIVILEGES, Limits(timeout=10.0))
    assert result.passed, result.reason
    token = f"{os.getpid()}.{time.monotonic_ns() % 10**9}"
    assert run_program(LEAVE_DAEMON.format(token=token), Limits(timeout=5.0)).passed
    result = run_program(
        LEAVE_DAEMON.format(token=token) + "import time\ntime.sleep(60)\n", Limits(timeout=1.0)
    )
    assert result.reason == "timeout"
    time.sleep(0.2)
    assert alive_with(token) == [], "the subreaper must kill daemons, also on timeout"
    swap = (
        "import os, sys\nos.symlink('/dev/zero', 'stderr')\nsys.stderr.write('why\\n')\nraise SystemExit(1)\n"
    )
    assert run_program(swap, Limits(timeout=5.0)).reason == "error: why"
    assert list(no_namespaces.iterdir()) == []  # every staging folder removed


_AS_USER = """
import sys
sys.path.insert(0, {src!r})
from spillover.evaluation.sandbox import Limits, run_program
for name in sys.argv[1:]:
    result = run_program(open(name).read(), Limits(timeout=10.0))
    print(name, result.passed, result.reason)
"""


@pytest.mark.skipif(not Path(SYSTEM_PYTHON).exists(), reason="no system Python")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_as_an_unprivileged_user_through_user_namespaces(reachable_dir):
    reachable_dir.chmod(0o777)
    (reachable_dir / "host.py").write_text(_AS_USER.format(src=SRC))
    token = f"{os.getpid()}.{time.monotonic_ns() % 10**9}"
    programs = {"privileges.py": PRIVILEGES, "daemon.py": LEAVE_DAEMON.format(token=token)}
    for name, text in programs.items():
        (reachable_dir / name).write_text(text)
    for path in reachable_dir.iterdir():
        path.chmod(0o644)
    command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]
    command += ["--bounding-set=-all", "env", "-i", "PATH=/usr/bin:/bin", f"TMPDIR={reachable_dir}"]
    command += [SYSTEM_PYTHON, "host.py", *programs]
    done = subprocess.run(command, cwd=reachable_dir, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [line.split(" ", 2)[1] for line in done.stdout.splitlines()] == ["True"] * len(programs), (
        done.stdout
    )
    time.sleep(0.2)
    assert alive_with(token) == []
