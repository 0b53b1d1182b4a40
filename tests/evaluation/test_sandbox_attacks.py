"""Issue 28, items 1-6: what generated code tried against the pass@1 sandbox, each as a test.

Every test asserts that the host survives (run_program returns within its limits), that nothing outside
the sandbox is touched, and that the attacking sample fails with a reason. Where this machine lacks a
layer (namespaces, Landlock), the assertion is the documented fallback's.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spillover.evaluation import confine
from spillover.evaluation.sandbox import Limits, run_program

LAYERS = confine.available()
AS_ROOT = os.geteuid() == 0
_FS_IOC_GETFLAGS = 0x80086601
_FS_IMMUTABLE_FL = 0x10


def _token() -> str:
    """A unique string to find this test's processes or data by."""
    return f"{os.getpid()}.{time.monotonic_ns() % 10**9}"


def _stat(path: Path) -> tuple:
    st = path.stat()
    return st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns


def _flags(path: Path) -> int:
    """The file's attribute flags (chattr), or -1 where the filesystem has none."""
    try:
        with open(path, "rb") as f:
            return struct.unpack("l", fcntl.ioctl(f.fileno(), _FS_IOC_GETFLAGS, b"\0" * 8))[0]
    except OSError:
        return -1


def alive_with(token: str) -> list[int]:
    """Host pids (not zombies) whose command line contains `token`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            if token in cmdline and (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError, PermissionError):
            continue
    return found


# ------------------------------------------------------------------- 1. no uid 0, no capabilities


PRIVILEGES = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
class Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]
data = (Data * 2)()
assert libc.capget(ctypes.byref(Header(0x20080522, 0)), ctypes.byref(data)) == 0
sets = {f"{name}{i}": getattr(d, name) for i, d in enumerate(data) for name in ("effective", "permitted", "inheritable")}
assert not any(sets.values()), sets
bounding = [c for c in range(64) if libc.prctl(23, c, 0, 0, 0) == 1]  # PR_CAPBSET_READ
assert bounding == [], bounding
ambient = [c for c in range(64) if libc.prctl(47, 1, c, 0, 0) == 1]  # PR_CAP_AMBIENT_IS_SET
assert ambient == [], ambient
assert libc.prctl(39, 0, 0, 0, 0) == 1, "no_new_privs"  # PR_GET_NO_NEW_PRIVS
assert 0 not in os.getresuid() and 0 not in os.getresgid(), (os.getresuid(), os.getresgid())
assert 0 not in os.getgroups(), os.getgroups()
"""


def test_child_has_an_unprivileged_uid_and_no_capabilities():
    result = run_program(PRIVILEGES, Limits(timeout=10.0))
    assert result.passed, result.reason


@pytest.mark.skipif(sys.platform != "linux", reason="Linux file attributes")
def test_metadata_of_files_outside_cannot_be_changed(tmp_path):
    """chmod / chown / chattr +i on files outside (hidden ones and the visible interpreter and /etc)."""
    hidden = tmp_path / "precious.txt"
    hidden.write_text("keep me")
    visible = [Path("/etc/passwd"), Path(os.path.realpath(sys.executable))]
    targets = [hidden, *visible]
    before = {p: (_stat(p), _flags(p)) for p in targets}
    for path in targets:
        for attack in (
            f"os.chmod({str(path)!r}, 0o777)",
            f"os.chown({str(path)!r}, os.getuid(), os.getgid())",
            f"fcntl.ioctl(os.open({str(path)!r}, os.O_RDONLY), 0x40086602, struct.pack('l', 0x10))",
        ):
            result = run_program(f"import fcntl, os, struct\n{attack}\n", Limits(timeout=5.0))
            assert not result.passed and "Error" in result.reason, (attack, result.reason)
    assert {p: (_stat(p), _flags(p)) for p in targets} == before
    assert not any(flags > 0 and flags & _FS_IMMUTABLE_FL for _, flags in before.values())
    assert hidden.read_text() == "keep me"


@pytest.mark.skipif(not Path("/etc/shadow").exists(), reason="no /etc/shadow here")
def test_etc_shadow_cannot_be_read():
    result = run_program("print(open('/etc/shadow').read())\n", Limits(timeout=5.0))
    assert not result.passed and "PermissionError" in result.reason, result.reason


# ------------------------------------------------------------------- 2. other processes' environment


def test_the_evaluators_environment_cannot_be_read_through_proc(monkeypatch):
    secret = f"hunter2-{_token()}"
    monkeypatch.setenv("SECRET_TOKEN", secret)
    host = os.getpid()
    direct = f"import os\nprint(open('/proc/{host}/environ').read())\n"
    result = run_program(direct, Limits(timeout=5.0))
    assert not result.passed and "Error" in result.reason and secret not in result.reason, result.reason
    scan = (
        "import os\n"
        "leaked, pids = [], [p for p in os.listdir('/proc') if p.isdigit()] if os.path.isdir('/proc') else []\n"
        "for pid in pids + [str(os.getppid())]:\n"
        "    for name in ('environ', 'cmdline'):\n"
        "        try:\n"
        "            data = open(f'/proc/{pid}/{name}', 'rb').read()\n"
        "        except OSError:\n"
        "            continue\n"
        "        if b'SECRET_TOKEN' in data or b'hunter2' in data:\n"
        "            leaked.append((pid, name))\n"
        "assert not leaked, leaked\n"
    )
    if LAYERS["namespaces"]:  # a fresh /proc: only the sandbox's init and the program itself
        scan += "assert sorted(map(int, pids)) in ([], [1, 2]), pids\n"
    result = run_program(scan, Limits(timeout=5.0))
    assert result.passed, result.reason


# ------------------------------------------------------------------- 3. filesystem (UNIX) sockets


def _unix_server(path: Path, kind: int) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, kind)
    server.bind(str(path))
    path.chmod(0o777)  # world-writable: the uid switch alone would not keep the sandbox out
    if kind == socket.SOCK_STREAM:
        server.listen(1)
    server.settimeout(0.3)
    return server


def test_unix_sockets_outside_cannot_be_reached(tmp_path):
    stream = _unix_server(tmp_path / "stream.sock", socket.SOCK_STREAM)
    dgram = _unix_server(tmp_path / "dgram.sock", socket.SOCK_DGRAM)
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind(f"\0spillover-test-{_token()}")
    abstract.listen(1)
    abstract.settimeout(0.3)
    try:
        exfiltrate = (
            "try:\n    data = open('/etc/shadow', 'rb').read(64)\nexcept OSError:\n    data = b'leak'\n"
        )
        attacks = [
            f"s = socket.socket(socket.AF_UNIX)\ns.connect({str(tmp_path / 'stream.sock')!r})\ns.sendall(data)\n",
            f"s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\ns.sendto(data, {str(tmp_path / 'dgram.sock')!r})\n",
            f"s = socket.socket(socket.AF_UNIX)\ns.connect({abstract.getsockname()!r})\ns.sendall(data)\n",
        ]
        for attack in attacks:
            result = run_program(f"import socket\n{exfiltrate}{attack}", Limits(timeout=5.0))
            assert not result.passed and "Error" in result.reason, (attack, result.reason)
        for server in (stream, abstract):
            with pytest.raises(TimeoutError):
                server.accept()
        with pytest.raises(TimeoutError):
            dgram.recv(100)
    finally:
        for server in (stream, dgram, abstract):
            server.close()


@pytest.mark.skipif(not LAYERS["namespaces"], reason="without namespaces the host's folders stay visible")
def test_only_system_folders_and_the_interpreter_are_visible():
    program = (
        "import os\n"
        "hidden = [p for p in ('/run', '/var/run', '/home', '/mnt', '/srv', '/var') if os.path.exists(p)]\n"
        "assert not hidden, hidden\n"
        "assert os.listdir('/tmp') == [], os.listdir('/tmp')\n"
    )
    result = run_program(program, Limits(timeout=5.0))
    assert result.passed, result.reason


# ------------------------------------------------------------------- 4. output is read from pipes


@pytest.mark.parametrize(
    "swap",
    [
        "pass",  # deleted
        "os.mkfifo(name)",
        "os.symlink('/dev/zero', name)",
        "os.symlink('/etc/shadow', name)",
        "os.symlink('/etc/passwd', name)",
    ],
)
def test_the_host_reads_output_through_pipes_not_files(swap):
    """The attacks on the old capture files: deleting them, FIFOs, links to /dev/zero or /etc/shadow."""
    program = (
        "import os, sys\n"
        "for name in ('stdout', 'stderr', 'program.py'):\n"
        "    try:\n"
        "        os.remove(name)\n"
        "    except FileNotFoundError:\n"
        "        pass\n"
        f"    {swap}\n"
        "sys.stderr.write('the reason\\n')\n"
        "raise SystemExit(1)\n"
    )
    start = time.monotonic()
    result = run_program(program, Limits(timeout=5.0))
    assert time.monotonic() - start < 5.0
    assert not result.passed and result.reason == "error: the reason", result.reason


def test_closed_output_does_not_end_the_time_limit():
    program = "import os, time\nos.close(1)\nos.close(2)\ntime.sleep(60)\n"
    result = run_program(program, Limits(timeout=1.0))
    assert result.reason == "timeout" and result.seconds < 4


def test_endless_stderr_is_capped_and_only_its_tail_is_kept():
    program = "import sys\nwhile True:\n    sys.stderr.write('y' * 65536)\n"
    result = run_program(program, Limits(timeout=5.0, max_file_bytes=1 << 20))
    assert not result.passed and result.reason == f"error: output over {1 << 20} bytes"
    assert result.seconds < 5.0


# ------------------------------------------------------------------- 5. nothing outlives a sample


LEAVE_DAEMON = """
import os
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv('/bin/sleep', ['sleep', '{token}'])
    os._exit(0)
os.wait()
"""


@pytest.mark.skipif(not Path("/proc").exists(), reason="needs /proc to look for leftovers")
def test_setsid_grandchildren_do_not_outlive_the_sample():
    token = _token()
    result = run_program(LEAVE_DAEMON.format(token=token), Limits(timeout=5.0))
    assert result.passed, result.reason  # the program itself does nothing wrong
    time.sleep(0.2)
    assert alive_with(token) == []


def test_leftovers_cannot_exhaust_the_process_limit():
    token = _token()
    limits = Limits(timeout=5.0, max_processes=4)
    for _ in range(6):  # would leave 6 sleepers, more than the limit
        assert run_program(LEAVE_DAEMON.format(token=token), limits).passed
    correct = "import subprocess\nassert subprocess.run(['true']).returncode == 0\n"
    result = run_program(correct, limits)
    assert result.passed, result.reason
    assert alive_with(token) == []


def test_a_timed_out_sample_leaves_no_daemon():
    token = _token()
    program = LEAVE_DAEMON.format(token=token) + "import time\ntime.sleep(60)\n"
    result = run_program(program, Limits(timeout=1.0))
    assert result.reason == "timeout"
    time.sleep(0.2)
    assert alive_with(token) == []


@pytest.mark.integration
@pytest.mark.skipif(not LAYERS["namespaces"], reason="without a PID namespace, daemons outlive a killed host")
def test_killing_the_evaluator_ends_the_sample_and_its_daemons(tmp_path):
    token = _token()
    program = LEAVE_DAEMON.format(token=token) + "import time\ntime.sleep(60)\n"
    evaluator = (
        "import sys\nfrom spillover.evaluation.sandbox import Limits, run_program\n"
        "run_program(sys.stdin.read(), Limits(timeout=60.0))\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # a SIGKILLed evaluator leaves its staging folder
    proc = subprocess.Popen([sys.executable, "-c", evaluator], stdin=subprocess.PIPE, text=True, env=env)
    try:
        proc.stdin.write(program)
        proc.stdin.close()
        deadline = time.monotonic() + 30
        while not alive_with(token) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert alive_with(token), "the daemon never started"
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 5
    while alive_with(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive_with(token) == []


# ------------------------------------------------------------------- 6. whole-sandbox budgets


def test_memory_budget_holds_for_all_processes_together():
    """Three children of 600 MB each (1.8 GB) under a 1 GiB budget: the sample fails, the host lives."""
    program = (
        "import os\n"
        "pids = []\n"
        "for _ in range(3):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        try:\n"
        "            block = bytearray(600 << 20)\n"
        "            block[:: 4096] = b'x' * len(block[:: 4096])\n"
        "        except MemoryError:\n"
        "            os._exit(1)\n"
        "        os._exit(0)\n"
        "    pids.append(pid)\n"
        "held = sum(os.waitpid(pid, 0)[1] == 0 for pid in pids)\n"
        "assert held == 0, f'{held} children held 600 MB'\n"
        "raise MemoryError('every child was refused')\n"
    )
    result = run_program(program, Limits(timeout=10.0, memory_bytes=1 << 30))
    assert not result.passed and result.reason == "error: MemoryError: every child was refused", result.reason


def test_per_process_limits_sum_to_the_budget():
    """The documented fallback without cgroup v2: address space x process count <= the budget."""
    budget, n = 1 << 30, 8
    program = (
        "import resource\n"
        "space = resource.getrlimit(resource.RLIMIT_AS)[1]\n"
        "count = resource.getrlimit(resource.RLIMIT_NPROC)[1]\n"
        f"assert space * count <= {budget}, (space, count)\n"
        f"assert count <= {n}, count\n"
    )
    result = run_program(program, Limits(timeout=5.0, memory_bytes=budget, max_processes=n))
    assert result.passed, result.reason


@pytest.mark.skipif(not LAYERS["namespaces"], reason="the folder cap is a tmpfs in the sandbox's namespaces")
def test_disk_budget_holds_for_the_whole_folder():
    """40 files of 10 MB, each under the per-file limit, against a 64 MiB folder (shared with /tmp)."""
    program = (
        "import os\n"
        "for i in range(40):\n"
        "    folder = '/tmp' if i % 2 else '.'\n"
        "    with open(f'{folder}/f{i}', 'wb') as f:\n"
        "        f.write(b'x' * (10 << 20))\n"
    )
    start = time.monotonic()
    result = run_program(program, Limits(timeout=10.0, max_disk_bytes=64 << 20))
    assert not result.passed and "No space left on device" in result.reason, result.reason
    assert time.monotonic() - start < 10.0
    small = "open('f', 'wb').write(b'x' * (8 << 20))\n"
    assert run_program(small, Limits(timeout=5.0, max_disk_bytes=64 << 20)).passed
