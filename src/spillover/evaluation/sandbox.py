"""Run model-written Python with its unit tests in a separate, resource-limited process (for pass@1).

The threat model is damage by generated code (endless loops, huge allocations, fork bombs, deleting or
overwriting files, phoning home, reading the evaluator's secrets). Each run gets
- a fresh temporary working directory (also HOME and TMPDIR), deleted afterwards;
- a scrubbed environment (PATH, locale, single-threaded BLAS), stdin closed, `python -I` (isolated mode);
- rlimits: address space, CPU seconds, file size, no core files, and a small process count;
- a wall-clock timeout, after which the whole process group (its own session) is killed;
- on Linux (`confine.py`): an empty network namespace (no network at all) and a Landlock ruleset that
  allows writes only inside the working directory, and no TCP or signals out of the sandbox. When the
  kernel offers a layer it is mandatory: if applying it fails the program is not run (fail closed). When
  the kernel lacks one (no Landlock before 5.13, namespaces disabled), a warning says what is missing.
  The child can still *read* what its user can read; keep secrets out of world-readable files.

Root is exempt from RLIMIT_NPROC, so under root (containers) the child's *real* uid is switched to
`nobody` (the effective uid stays 0, so the interpreter under /root stays reachable) and the capabilities
that lift the limit are dropped from its bounding set; that makes the process limit bite.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from spillover.evaluation import confine
from spillover.evaluation.confine import LIBC

log = logging.getLogger(__name__)
_NOBODY = 65534
_PR_CAPBSET_DROP = 24
_CAP_SETUID, _CAP_SYS_ADMIN, _CAP_SYS_RESOURCE = 7, 21, 24
_POLL_SECONDS = 0.005


@dataclass(frozen=True)
class Limits:
    """Resource limits for one sandboxed run."""

    timeout: float = 10.0  # wall-clock seconds
    memory_bytes: int = 1 << 30  # address space
    max_processes: int = 32  # RLIMIT_NPROC (counts every process of the child's real uid)
    max_file_bytes: int = 16 << 20  # largest file the child may write (stdout/stderr included)
    confine: bool = True  # no network, writes only in the working directory (where the kernel allows)
    writable: tuple[str, ...] = ()  # further folders the child may write to (besides its own)


@dataclass(frozen=True)
class SandboxResult:
    """`reason` is "ok", "timeout", or "error: <last line of stderr or the fatal signal>"."""

    passed: bool
    reason: str
    seconds: float


def run_tests(code: str, tests: str, timeout: float = 10.0) -> SandboxResult:
    """Run `code` followed by `tests` (e.g. assert statements); passed = exit status 0 within the limits."""
    return run_program(f"{code}\n\n{tests}\n", Limits(timeout=timeout))


def run_program(program: str, limits: Limits = Limits()) -> SandboxResult:
    """Run `program` as a Python script under `limits` in a throw-away directory."""
    workdir = Path(tempfile.mkdtemp(prefix="spillover-sandbox-"))
    try:
        (workdir / "program.py").write_text(program, encoding="utf-8")
        return _run_in(workdir, limits)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run_in(workdir: Path, limits: Limits) -> SandboxResult:
    start = time.monotonic()
    with open(workdir / "stdout", "wb") as out, open(workdir / "stderr", "wb") as err:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "program.py"],
                cwd=workdir,
                env=_clean_env(workdir),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # own process group: one killpg reaches every descendant
                preexec_fn=partial(_limit_child, limits, os.geteuid() == 0, _layers(limits, workdir)),
            )
        except OSError as e:  # e.g. EAGAIN: too many sandboxed processes alive right now
            return SandboxResult(False, f"error: could not start ({e})", time.monotonic() - start)
        except subprocess.SubprocessError as e:  # a mandatory confinement layer failed: fail closed
            return SandboxResult(False, f"error: could not confine ({e})", time.monotonic() - start)
        timed_out = _wait_unreaped(proc.pid, start + limits.timeout)
        _kill_group(proc.pid)  # stray children too; the unreaped leader keeps the group id from reuse
        returncode = proc.wait()
    seconds = time.monotonic() - start
    if timed_out:
        return SandboxResult(False, "timeout", seconds)
    if returncode == 0:
        return SandboxResult(True, "ok", seconds)
    return SandboxResult(False, f"error: {_failure(workdir / 'stderr', returncode)}", seconds)


def _wait_unreaped(pid: int, deadline: float) -> bool:
    """Wait until `pid` exits without reaping it; True if `deadline` passed first."""
    flags = os.WEXITED | os.WNOWAIT | os.WNOHANG
    while os.waitid(os.P_PID, pid, flags) is None:
        if time.monotonic() >= deadline:
            return True
        time.sleep(_POLL_SECONDS)
    return False


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the group is already empty
    except PermissionError:
        pass  # only the zombie leader is left (macOS refuses killpg then)


def _failure(stderr_path: Path, returncode: int) -> str:
    """The last non-empty stderr line, else the signal that ended the process."""
    with open(stderr_path, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
        tail = f.read().decode("utf-8", errors="replace")
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    if lines:
        return lines[-1][:300]
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit status {returncode}"


def _clean_env(workdir: Path) -> dict[str, str]:
    """Nothing from the parent's environment except a fixed PATH: no tokens, keys or HOME secrets."""
    single = "1"
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": single,
        "OPENBLAS_NUM_THREADS": single,
        "MKL_NUM_THREADS": single,
    }


@dataclass(frozen=True)
class _Layers:
    network: bool
    writes: tuple[str, ...] | None  # folders writable under Landlock; None = no Landlock


_warned: set[str] = set()


def _layers(limits: Limits, workdir: Path) -> _Layers:
    """The confinement layers to apply: all the kernel offers (warning once about any it lacks)."""
    if not limits.confine:
        return _Layers(False, None)
    have = confine.available()
    for layer, missing in (
        ("network_namespace", "generated code keeps network access"),
        ("landlock_fs", "generated code can write outside its folder"),
    ):
        if not have[layer] and layer not in _warned:
            _warned.add(layer)
            log.warning("sandbox: %s is unavailable on this machine; %s", layer, missing)
    writes = (str(workdir), *limits.writable) if have["landlock_fs"] else None
    return _Layers(have["network_namespace"], writes)


def _limit_child(limits: Limits, as_root: bool, layers: _Layers) -> None:
    """Runs in the child between fork and exec: rlimits and confinement, no logging. Raising here makes
    Popen fail (SubprocessError), so a layer the kernel offers is never silently skipped."""
    if layers.network and not confine.isolate_network():
        raise RuntimeError("could not enter a new network namespace")
    if layers.writes is not None and not confine.restrict_writes(layers.writes):
        raise RuntimeError("could not apply the Landlock ruleset")
    cpu = math.ceil(limits.timeout) + 1
    _lower(resource.RLIMIT_AS, limits.memory_bytes)
    _lower(resource.RLIMIT_CPU, cpu)
    _lower(resource.RLIMIT_CORE, 0)
    _lower(resource.RLIMIT_FSIZE, limits.max_file_bytes)
    _lower(resource.RLIMIT_NPROC, limits.max_processes)
    if as_root and LIBC is not None:
        _count_as_nobody()


def _lower(which: int, value: int) -> None:
    """Set soft and hard limit to `value`, never above the current hard limit (which would fail)."""
    _, hard = resource.getrlimit(which)
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(which, (value, value))


def _count_as_nobody() -> None:
    """Make RLIMIT_NPROC apply under root: the kernel counts processes per *real* uid and exempts uid 0
    and holders of CAP_SYS_RESOURCE / CAP_SYS_ADMIN. Best effort: where root lacks CAP_SETUID or
    CAP_SETPCAP (a user namespace), these calls fail and the kernel already enforces the limit there."""
    try:
        os.setresuid(_NOBODY, 0, 0)
    except OSError:
        return
    for cap in (_CAP_SYS_ADMIN, _CAP_SYS_RESOURCE, _CAP_SETUID):
        LIBC.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
