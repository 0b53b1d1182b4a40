"""Run model-written Python with its unit tests in a confined, resource-limited process (for pass@1).

The threat model is damage by generated code running as the evaluator's user, root included (endless
loops, huge allocations, fork bombs, processes left behind, touching files outside its folder, reaching
sockets or the network, reading the evaluator's secrets). Each run gets
- a scrubbed environment (PATH, locale, single-threaded BLAS), stdin closed, `python -I`;
- `confine.py`'s launcher: its own mount / PID / IPC / UTS / network namespaces, a minimal read-only root
  with a size-capped folder, no capabilities, `no_new_privs`, an unprivileged uid (`nobody` under root)
  and Landlock; every process of the sample dies when it ends;
- rlimits: address space (the whole-sandbox memory budget split over the process limit, so their sum
  fits), CPU seconds, file size, no core files, a process count;
- a wall-clock timeout; output read by the host through pipes it opened before the start, capped in size.
A layer the kernel offers is mandatory (fail closed); a layer it lacks is named once in a warning.
"""

from __future__ import annotations

import logging
import math
import os
import pwd
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from spillover.evaluation import confine

log = logging.getLogger(__name__)
_NOBODY = "nobody"
_POLL_SECONDS = 0.005
_GRACE_SECONDS = 1.0  # after a timeout, how long the launcher has to kill its descendants itself
_TAIL_BYTES = 4096  # of stderr kept for the failure reason
_WORKDIR = "/sandbox"  # the program's folder inside the namespaces (also HOME and TMPDIR)
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")


@dataclass(frozen=True)
class Limits:
    """Resource limits for one sandboxed run. `memory_bytes` and `max_disk_bytes` bound the sandbox as a
    whole: each process gets `memory_bytes // max_processes` of address space."""

    timeout: float = 10.0  # wall-clock seconds
    memory_bytes: int = 1 << 30  # address space of all the sample's processes together
    max_processes: int = 8  # RLIMIT_NPROC (counts every process and thread of the sandbox uid)
    max_file_bytes: int = 16 << 20  # largest file the child may write; also the cap on stdout and stderr
    confine: bool = True  # namespaces, Landlock, no privileges (where the kernel allows)
    writable: tuple[str, ...] = ()  # host folders the child may write to (they must allow the sandbox uid)
    max_disk_bytes: int = 64 << 20  # the program's folder, /tmp and /dev/shm together (a tmpfs, in RAM)


@dataclass(frozen=True)
class SandboxResult:
    """`reason` is "ok", "timeout", or "error: <last line of stderr, the fatal signal or the setup step
    that failed>"."""

    passed: bool
    reason: str
    seconds: float


def run_tests(code: str, tests: str, timeout: float = 10.0) -> SandboxResult:
    """Run `code` followed by `tests` (e.g. assert statements); passed = exit status 0 within the limits."""
    return run_program(f"{code}\n\n{tests}\n", Limits(timeout=timeout))


def run_program(program: str, limits: Limits = Limits()) -> SandboxResult:
    """Run `program` as a Python script under `limits`; nothing it writes outlives the call."""
    staging = Path(tempfile.mkdtemp(prefix="spillover-sandbox-"))
    try:
        (staging / "program.py").write_text(program, encoding="utf-8")
        return _run_in(staging, limits)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclass
class _Output:
    status: bytearray  # the launcher's setup failure, if any
    tail: bytearray  # the end of stderr
    n_bytes: int = 0  # stdout + stderr
    timed_out: bool = False
    overflow: bool = False


def _run_in(staging: Path, limits: Limits) -> SandboxResult:
    start = time.monotonic()
    spec = _spec(staging, limits)
    status_r, status_w = os.pipe()
    spec["status_fd"] = status_w
    launcher = [sys.executable, "-I", "-S", confine.__file__, confine.encode_spec(spec)]
    try:
        proc = subprocess.Popen(
            launcher,
            cwd=staging,
            env=_clean_env(spec["workdir"]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(status_w,),
            start_new_session=True,  # own process group: one killpg reaches the launcher and its children
        )
    except OSError as e:
        os.close(status_r)
        return SandboxResult(False, f"error: could not start ({e})", time.monotonic() - start)
    finally:
        os.close(status_w)
    try:
        out = _collect(proc, status_r, start + limits.timeout, limits.max_file_bytes)
        returncode = _finish(proc, out, start + limits.timeout)
    finally:
        for stream in (proc.stdout, proc.stderr):
            stream.close()
        os.close(status_r)
    return _result(out, returncode, time.monotonic() - start, limits)


def _spec(staging: Path, limits: Limits) -> dict:
    """What the launcher needs (plain values): identities, layers, paths, limits."""
    layers = _layers(limits)
    as_root = os.geteuid() == 0
    uid, gid = _sandbox_ids(as_root)
    workdir = _WORKDIR if layers["namespaces"] else str(staging / "work")
    if not layers["namespaces"]:
        _prepare_host_folder(staging, uid, gid, as_root)
    n_processes = max(1, limits.max_processes)
    return {
        "host_pid": os.getpid(),
        "python": sys.executable,
        "program": str(staging / "program.py"),
        "root": str(_mkdir(staging / "root")),
        "workdir": workdir,
        "scratch": ["/tmp", "/dev/shm"] if layers["namespaces"] else [],
        "uid": uid,
        "gid": gid,
        "as_root": as_root,
        "read_only": _read_only_paths(),
        "writable": [os.path.realpath(p) for p in limits.writable],
        "disk_bytes": limits.max_disk_bytes,
        "rlimits": {
            "as": limits.memory_bytes // n_processes,
            "cpu": math.ceil(limits.timeout) + 1,
            "core": 0,
            "fsize": limits.max_file_bytes,
            "nproc": n_processes,
        },
        **layers,
    }


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _sandbox_ids(as_root: bool) -> tuple[int, int]:
    """`nobody` under root (a real uid without privileges); otherwise the caller's own ids."""
    if not as_root:
        return os.getuid(), os.getgid()
    try:
        entry = pwd.getpwnam(_NOBODY)
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return 65534, 65534


def _prepare_host_folder(staging: Path, uid: int, gid: int, as_root: bool) -> None:
    """Without namespaces the program runs in `staging/work`, which the sandbox uid must own."""
    work = _mkdir(staging / "work")
    shutil.copy(staging / "program.py", work / "program.py")
    if as_root:
        staging.chmod(0o711)
        for path in (work, work / "program.py"):
            os.chown(path, uid, gid)


def _read_only_paths() -> list[str]:
    """The system folders plus the interpreter's (its venv and base install), none inside another."""
    python = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    python |= {os.path.dirname(sys.executable), os.path.dirname(os.path.realpath(sys.executable))}
    real = sorted({os.path.realpath(p) for p in python})
    system = [p for p in _SYSTEM if os.path.lexists(p)]
    covered = [os.path.realpath(p) for p in system]
    extra = [p for p in real if not any(p == c or p.startswith(c.rstrip("/") + "/") for c in covered)]
    return system + [p for p in extra if not any(p.startswith(q + "/") for q in extra)]


def _collect(proc: subprocess.Popen, status_r: int, deadline: float, cap: int) -> _Output:
    """Read the status pipe, stdout and stderr until all end, the deadline passes or output exceeds
    `cap` bytes on either stream; keeps the status and the tail of stderr only."""
    out = _Output(bytearray(), bytearray())
    sizes: dict[int, int] = {}
    with selectors.DefaultSelector() as sel:
        for fd in (status_r, proc.stdout.fileno(), proc.stderr.fileno()):
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
            sizes[fd] = 0
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                out.timed_out = True
                return out
            for key, _ in sel.select(remaining):
                data = os.read(key.fd, 1 << 16)
                if not data:
                    sel.unregister(key.fd)
                elif key.fd == status_r:
                    out.status += data[: _TAIL_BYTES - len(out.status)]
                else:
                    sizes[key.fd] += len(data)
                    out.n_bytes += len(data)
                    if key.fd == proc.stderr.fileno():
                        out.tail = (out.tail + data)[-_TAIL_BYTES:]
                    if sizes[key.fd] > cap:
                        out.overflow = True
                        return out
    return out


def _finish(proc: subprocess.Popen, out: _Output, deadline: float) -> int:
    """Wait for the launcher until the deadline (output may end before the program does), then end the
    sample: SIGTERM lets a launcher without namespaces kill its descendants, SIGKILL the rest."""
    if not out.overflow and not out.timed_out:
        out.timed_out = _wait_unreaped(proc.pid, deadline)
    if out.overflow or out.timed_out:
        _signal_group(proc.pid, signal.SIGTERM)
        _wait_unreaped(proc.pid, time.monotonic() + _GRACE_SECONDS)
    _signal_group(proc.pid, signal.SIGKILL)  # the unreaped leader keeps the group id from reuse
    return proc.wait()


def _wait_unreaped(pid: int, deadline: float) -> bool:
    """Wait until `pid` exits without reaping it; True if `deadline` passed first."""
    flags = os.WEXITED | os.WNOWAIT | os.WNOHANG
    while os.waitid(os.P_PID, pid, flags) is None:
        if time.monotonic() >= deadline:
            return True
        time.sleep(_POLL_SECONDS)
    return False


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass  # the group is already empty
    except PermissionError:
        pass  # only the zombie leader is left (macOS refuses killpg then)


def _result(out: _Output, returncode: int, seconds: float, limits: Limits) -> SandboxResult:
    if out.status:
        return SandboxResult(False, f"error: could not confine ({_text(out.status)[:300]})", seconds)
    if out.overflow:
        return SandboxResult(False, f"error: output over {limits.max_file_bytes} bytes", seconds)
    if out.timed_out:
        return SandboxResult(False, "timeout", seconds)
    if returncode == 0:
        return SandboxResult(True, "ok", seconds)
    return SandboxResult(False, f"error: {_failure(out.tail, returncode)}", seconds)


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace").strip()


def _failure(tail: bytes, returncode: int) -> str:
    """The last non-empty stderr line, else the signal that ended the program (reported as 128 + n)."""
    lines = [line.strip() for line in _text(tail).splitlines() if line.strip()]
    if lines:
        return lines[-1][:300]
    if returncode > 128 and returncode - 128 in signal.valid_signals():
        return f"killed by {signal.Signals(returncode - 128).name}"
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit status {returncode}"


def _clean_env(workdir: str) -> dict[str, str]:
    """Nothing from the parent's environment except a fixed PATH: no tokens, keys or HOME secrets."""
    single = "1"
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": single,
        "OPENBLAS_NUM_THREADS": single,
        "MKL_NUM_THREADS": single,
        "MALLOC_ARENA_MAX": "2",  # glibc reserves 64 MiB of address space per thread arena otherwise
    }


_warned: set[str] = set()


def _layers(limits: Limits) -> dict[str, bool]:
    """The confinement layers to apply: all the kernel offers (warning once about any it lacks)."""
    if not limits.confine:
        return {"namespaces": False, "network": False, "landlock": False}
    have = confine.available()
    for layer, missing in (
        ("namespaces", "the host's files stay visible (read-only) and the folder has no size cap"),
        ("network_namespace", "generated code keeps network access"),
        ("landlock_fs", "generated code can write wherever the sandbox user may"),
    ):
        if not have[layer] and layer not in _warned:
            _warned.add(layer)
            log.warning("sandbox: %s is unavailable on this machine; %s", layer, missing)
    return {
        "namespaces": have["namespaces"],
        "network": have["network_namespace"],
        "landlock": have["landlock_fs"],
    }
