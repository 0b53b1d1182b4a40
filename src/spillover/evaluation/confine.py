"""Kernel-level confinement for the pass@1 sandbox (Linux), and the launcher that applies it.

`sandbox.py` starts this file as a script (`python -I -S confine.py SPEC`, stdlib only, so no part of the
evaluator's state or threads is involved) and reads the program's output through pipes. The launcher:

1. dies with its parent (`PR_SET_PDEATHSIG`) and enters new **mount, PID, IPC, UTS and network
   namespaces** (through a user namespace when not root);
2. forks the namespace's init (PID 1), which builds a minimal root: the system folders (`/usr`, `/etc`,
   `/lib*`) and the interpreter read-only, a fresh `/proc` that shows only the sandbox's processes, a few
   `/dev` nodes, and one size-capped tmpfs behind `/sandbox` (the program's folder), `/tmp` and `/dev/shm`
   (the folder / disk budget); it then `pivot_root`s into it, so nothing else of the host's filesystem,
   UNIX sockets included, can be named;
3. forks the program (PID 2), which sets rlimits, `no_new_privs`, a Landlock ruleset, drops every
   capability (bounding, ambient, inheritable; effective and permitted go with the uid), switches to an
   unprivileged uid/gid (`nobody` under root) and execs Python. When it exits, init exits, and the kernel
   kills every process left in the PID namespace.

A layer the kernel offers is mandatory: any failure is written to a status pipe the host passed in, the
program is not run, and the host reports it (fail closed). Where namespaces are missing, the launcher runs
the program in a host folder and becomes a child subreaper, killing every leftover descendant when the
program exits. Landlock (kernel >= 5.13) restricts writes, and by ABI TCP (4) and signals / abstract
UNIX sockets (6). Hand-written with ctypes: no maintained binding covers these syscalls together.
"""

from __future__ import annotations

import ctypes
import errno
import marshal
import os
import resource
import sys

_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x20000, 0x4000000, 0x8000000
_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
_NAMESPACES = _CLONE_NEWNS | _CLONE_NEWUTS | _CLONE_NEWIPC | _CLONE_NEWPID | _CLONE_NEWNET
_PR_SET_PDEATHSIG, _PR_CAPBSET_DROP, _PR_SET_CHILD_SUBREAPER = 1, 24, 36
_PR_SET_NO_NEW_PRIVS, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 38, 47, 4
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_MNT_DETACH = 2
_LOCKED_FLAGS = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC | 1024 | 2048  # + noatime, nodiratime (kept on remount)
_SYS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}  # create_ruleset, add_rule, restrict_self
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_CAP_VERSION_3 = 0x20080522
SETUP_FAILED = 126  # exit status of a launcher that did not run the program (the status pipe says why)

# LANDLOCK_ACCESS_FS_*: write-like rights (reads and execute are left alone)
_FS_WRITE = 1 << 1
_FS_REMOVE_DIR, _FS_REMOVE_FILE = 1 << 4, 1 << 5
_FS_MAKE = sum(1 << b for b in range(6, 13))  # char, dir, reg, sock, fifo, block, sym
_FS_REFER, _FS_TRUNCATE = 1 << 13, 1 << 14  # ABI 2, ABI 3
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6

LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_MACHINE = os.uname().machine
_SIGKILL, _SIGTERM = 9, 15  # numbers, not the `signal` module: the launcher's start-up is on every sample
_probed: dict[int, bool] = {}


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


# ------------------------------------------------------------------------------------------ what's here


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is missing or disabled (or not Linux)."""
    numbers = _SYS.get(_MACHINE)
    if LIBC is None or numbers is None:
        return 0
    version = LIBC.syscall(numbers[0], None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(int(version), 0)


def available() -> dict[str, bool]:
    """Which layers this machine can apply. Namespaces are probed once per process, in a fresh
    interpreter (`confine.py --probe`), so the evaluator, threads and all, is never forked."""
    if not _probed:
        _probed.update(_probe_in_subprocess())
    return {
        "namespaces": _probed[_NAMESPACES],
        "network_namespace": _probed[_CLONE_NEWNET],
        "landlock_fs": landlock_abi() >= 1,
        "landlock_net": landlock_abi() >= 4,
        "landlock_scope": landlock_abi() >= 6,
    }


def _probe_in_subprocess() -> dict[int, bool]:
    import subprocess  # not at the top: the launcher imports this module on every sample

    if LIBC is None:
        return dict.fromkeys((_NAMESPACES, _CLONE_NEWNET), False)
    command = [sys.executable, "-I", "-S", __file__, "--probe"]
    done = subprocess.run(command, capture_output=True, text=True, env={}, timeout=60, check=False)
    answers = done.stdout.split() if done.returncode == 0 else []
    return {flags: f"{flags}:1" in answers for flags in (_NAMESPACES, _CLONE_NEWNET)}


def _try_in_child(flags: int) -> bool:
    if LIBC is None or _MACHINE not in _PIVOT_ROOT:
        return False
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        ok = _unshare(flags, os.getuid(), os.getgid())
        if ok and flags & _CLONE_NEWNS:
            ok = LIBC.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) == 0
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def _unshare(flags: int, uid: int, gid: int) -> bool:
    """Enter new namespaces; as non-root through a user namespace mapping only our own uid/gid."""
    if LIBC.unshare(flags) == 0:
        return True
    if os.geteuid() == 0 or LIBC.unshare(_CLONE_NEWUSER | flags) != 0:
        return False
    try:
        for name, text in (
            ("setgroups", "deny"),
            ("uid_map", f"{uid} {uid} 1"),
            ("gid_map", f"{gid} {gid} 1"),
        ):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    except OSError:
        return False
    return True


def isolate_network() -> bool:
    """Move the calling process into a new, empty network namespace. False when not permitted."""
    return LIBC is not None and _unshare(_CLONE_NEWNET, os.getuid(), os.getgid())


# ------------------------------------------------------------------------------------------- Landlock


def restrict_writes(writable: list[str] | tuple[str, ...]) -> bool:
    """Landlock the calling process: write-like file access only beneath `writable` (and /dev/null),
    no TCP bind/connect, no signals or abstract sockets out of the sandbox, as far as the ABI allows.
    Irreversible for the process and its children. False when Landlock is unavailable."""
    abi = landlock_abi()
    if abi < 1:
        return False
    create, add_rule, restrict = _SYS[_MACHINE]
    fs = _FS_WRITE | _FS_REMOVE_DIR | _FS_REMOVE_FILE | _FS_MAKE
    fs |= (_FS_REFER if abi >= 2 else 0) | (_FS_TRUNCATE if abi >= 3 else 0)
    attr = _RulesetAttr(
        fs,
        _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0,
        _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL if abi >= 6 else 0,
    )
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    fd = LIBC.syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if fd < 0:
        return False
    try:
        for path in writable:
            _allow(fd, add_rule, path, fs)
        _allow(fd, add_rule, "/dev/null", _FS_WRITE | (_FS_TRUNCATE if abi >= 3 else 0))
        if LIBC.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return False
        return LIBC.syscall(restrict, ctypes.c_int(fd), ctypes.c_uint32(0)) == 0
    finally:
        os.close(fd)


def _allow(ruleset_fd: int, add_rule: int, path: str, access: int) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        if not os.path.isdir(path):  # a file rule may only carry file rights
            access &= _FS_WRITE | _FS_TRUNCATE
        rule = _PathBeneathAttr(access, fd)
        args = (ctypes.c_int(ruleset_fd), ctypes.c_int(_RULE_PATH_BENEATH), ctypes.byref(rule))
        if LIBC.syscall(add_rule, *args, ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule({path})")
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------- launcher


class SetupError(Exception):
    """A confinement layer could not be applied: the program must not run."""


def _check(result: int, what: str) -> None:
    if result != 0:
        raise SetupError(f"{what}: {os.strerror(ctypes.get_errno())}")


def _prctl(option: int, arg: int, what: str) -> None:
    _check(LIBC.prctl(option, arg, 0, 0, 0), what)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    args = [None if s is None else os.fsencode(s) for s in (source, target, fstype, data)]
    _check(LIBC.mount(args[0], args[1], args[2], flags, args[3]), f"mount {target}")


def _bind(source: str, target: str, flags: int) -> None:
    """Bind `source` at `target` (created like it) with `flags` added to the source's locked ones."""
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    _mount(source, target, None, _MS_BIND | _MS_REC)
    flags |= _MS_REMOUNT | _MS_BIND | _MS_NOSUID | (os.statvfs(source).f_flag & _LOCKED_FLAGS)
    _mount(None, target, None, flags)


def _add_system_path(path: str, root: str) -> None:
    """Expose a host path read-only at the same place; a top-level symlink (merged /usr) is copied."""
    if os.path.islink(path) and os.path.dirname(path) == "/":
        os.symlink(os.readlink(path), root + path)
    elif os.path.exists(path):
        _bind(path, root + path, _MS_RDONLY | _MS_NODEV)


def _build_root(spec: dict) -> None:
    """Runs as the namespace's init: assemble the minimal root described in the module docstring."""
    root, uid, gid = spec["root"], spec["uid"], spec["gid"]
    with open(spec["program"], "rb") as f:
        program = f.read()
    os.umask(0o022)
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing below propagates back to the host
    _mount("tmpfs", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=4m,mode=0755")
    data = root + "/.data"
    os.mkdir(data)
    _mount("tmpfs", data, "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={spec['disk_bytes']},mode=0755")
    for name, mode in (("work", 0o700), ("tmp", 0o1777), ("shm", 0o1777)):
        os.mkdir(f"{data}/{name}")
        os.chown(f"{data}/{name}", uid, gid)
        os.chmod(f"{data}/{name}", mode)
    with open(f"{data}/work/program.py", "wb") as f:
        f.write(program)
    os.chown(f"{data}/work/program.py", uid, gid)
    for path in spec["read_only"]:
        _add_system_path(path, root)
    for path in spec["writable"]:
        _bind(path, root + path, _MS_NODEV)
    for name, target in (("work", spec["workdir"]), ("tmp", "/tmp"), ("shm", "/dev/shm")):
        _bind(f"{data}/{name}", root + target, _MS_NODEV)
    for node in ("null", "zero", "full", "random", "urandom"):
        _bind(f"/dev/{node}", f"{root}/dev/{node}", _MS_NOEXEC)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "0"), ("stdout", "1"), ("stderr", "2")):
        os.symlink(target if name == "fd" else f"/proc/self/fd/{target}", f"{root}/dev/{name}")
    os.mkdir(f"{root}/proc")
    proc = (b"proc", os.fsencode(f"{root}/proc"), b"proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None)
    LIBC.mount(*proc)  # refused where /proc is partly masked (some containers): then no /proc at all
    _check(LIBC.umount2(os.fsencode(data), _MNT_DETACH), "umount data")
    os.rmdir(data)
    _pivot(root)


def _pivot(root: str) -> None:
    os.mkdir(f"{root}/.old")
    pivot = _PIVOT_ROOT[_MACHINE]
    _check(LIBC.syscall(pivot, os.fsencode(root), os.fsencode(f"{root}/.old")), "pivot_root")
    os.chdir("/")
    _check(LIBC.umount2(b"/.old", _MNT_DETACH), "umount old root")
    os.rmdir("/.old")
    _mount(None, "/", None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)


def _set_rlimits(limits: dict[str, int]) -> None:
    for name, value in limits.items():
        which = getattr(resource, f"RLIMIT_{name.upper()}")
        _, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))


def _drop_privileges(uid: int, gid: int, as_root: bool) -> None:
    """Empty every capability set, then become `uid`/`gid`; verified, not assumed."""
    for cap in range(64):
        if LIBC.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) == 0 or ctypes.get_errno() == errno.EINVAL:
            continue  # EINVAL: the kernel has no such capability
        if ctypes.get_errno() == errno.EPERM and not as_root and os.getuid() != 0:
            break  # an unprivileged user without namespaces cannot, and under no_new_privs cannot use it
        raise SetupError(f"drop capability {cap} from the bounding set: {os.strerror(ctypes.get_errno())}")
    _check(LIBC.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient capabilities")
    if as_root:
        os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    header, empty = _CapHeader(_CAP_VERSION_3, 0), (_CapData * 2)()
    _check(LIBC.capset(ctypes.byref(header), ctypes.byref(empty)), "capset")
    now = (_CapData * 2)()
    _check(LIBC.capget(ctypes.byref(header), ctypes.byref(now)), "capget")
    held = any(d.effective or d.permitted or d.inheritable for d in now)
    if held or os.geteuid() == 0 or os.getegid() == 0 or os.getuid() != uid:
        raise SetupError("privileges are still held after dropping them")


def _start_program(spec: dict) -> None:
    """Runs in the program's process: limits, Landlock, no privileges, exec. Never returns."""
    parent = os.getppid()
    os.chdir(spec["workdir"])
    _set_rlimits(spec["rlimits"])
    _prctl(_PR_SET_NO_NEW_PRIVS, 1, "set no_new_privs")
    if spec["landlock"] and not restrict_writes([spec["workdir"], *spec["writable"], *spec["scratch"]]):
        raise SetupError("could not apply the Landlock ruleset")
    _drop_privileges(spec["uid"], spec["gid"], spec["as_root"])
    _prctl(_PR_SET_PDEATHSIG, _SIGKILL, "set the parent-death signal")  # a uid change cleared it
    if os.getppid() != parent:
        raise SetupError("the launcher exited before the program started")
    python = spec["python"]
    try:
        os.execve(python, [python, "-I", "program.py"], os.environ)
    except OSError as e:
        raise SetupError(f"could not start {python}: {e.strerror}") from e


def _wait_for(pid: int) -> int:
    """Reap children (orphans land here too) until `pid` exits; its status as an exit code >= 0."""
    while True:
        child, status = os.wait()
        if child == pid:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code  # a signal number is reported as 128 + n


class _Stop(Exception):
    """The host asked the launcher to end the sample (SIGTERM)."""


def _stop(signum: int, frame: object) -> None:
    raise _Stop


def _kill_descendants() -> None:
    """As a child subreaper: kill and reap every descendant (orphans are re-parented here) until none
    is left."""
    while True:
        try:
            for task in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{task}/children") as f:
                    for pid in f.read().split():
                        os.kill(int(pid), _SIGKILL)
            os.wait()
        except ChildProcessError:
            return
        except ProcessLookupError:
            continue


def _fork_into(target, spec: dict, status_fd: int) -> int:
    """Fork; the child runs `target(spec)` and reports a SetupError on the status pipe."""
    pid = os.fork()
    if pid:
        return pid
    try:  # pragma: no cover - child
        _prctl(_PR_SET_PDEATHSIG, _SIGKILL, "set the parent-death signal")
        target(spec)
    except (SetupError, OSError) as e:  # pragma: no cover - child
        os.write(status_fd, f"{type(e).__name__}: {e}".encode()[:2000])
    os._exit(SETUP_FAILED)  # pragma: no cover - child


def _init(spec: dict) -> None:
    """PID 1 of the sandbox: build the root, start the program, exit with it (the kernel then kills the
    rest of the namespace)."""
    status_fd, (lifeline, launcher_end) = spec["status_fd"], spec["lifeline"]
    os.close(launcher_end)
    os.set_blocking(lifeline, False)
    try:  # EOF: the launcher died before our parent-death signal was set
        if os.read(lifeline, 1) == b"":
            os._exit(SETUP_FAILED)
    except BlockingIOError:
        pass
    _build_root(spec)
    pid = _fork_into(_start_program, spec, status_fd)
    os.close(status_fd)
    os._exit(_wait_for(pid))


def encode_spec(spec: dict) -> str:
    """The launcher's argument: `marshal` (plain values only), as hex; the same interpreter reads it."""
    return marshal.dumps(spec).hex()


def main(argv: list[str]) -> None:
    """The launcher: `python -I -S confine.py SPEC` (SPEC from `encode_spec`, written by `sandbox.py`)."""
    if argv == ["--probe"]:
        print(*(f"{flags}:{int(_try_in_child(flags))}" for flags in (_NAMESPACES, _CLONE_NEWNET)))
        return
    spec = marshal.loads(bytes.fromhex(argv[0]))
    status_fd = spec["status_fd"]
    os.set_inheritable(status_fd, False)  # the program's exec closes it: end of setup for the host
    _set_rlimits({"core": 0})
    try:
        _prctl(_PR_SET_PDEATHSIG, _SIGKILL, "set the parent-death signal")
        if os.getppid() != spec["host_pid"]:
            raise SetupError("the evaluator exited before the sandbox started")
        if spec["namespaces"]:
            if not _unshare(_NAMESPACES, spec["uid"], spec["gid"]):
                raise SetupError(f"could not enter new namespaces: {os.strerror(ctypes.get_errno())}")
            spec["lifeline"] = os.pipe()  # the launcher holds the write end until it dies
            pid = _fork_into(_init, spec, status_fd)
        else:
            if spec["network"] and not isolate_network():
                raise SetupError("could not enter a new network namespace")
            _prctl(_PR_SET_CHILD_SUBREAPER, 1, "become a child subreaper")
            pid = _fork_into(_start_program, spec, status_fd)
    except (SetupError, OSError) as e:
        os.write(status_fd, f"{type(e).__name__}: {e}".encode()[:2000])
        os._exit(SETUP_FAILED)
    os.close(status_fd)
    for fd in (0, 1, 2):  # the host's EOF must not wait for the launcher
        os.dup2(os.open(os.devnull, os.O_RDWR), fd)
    if spec["namespaces"]:  # SIGTERM or SIGKILL end the launcher, then init (parent-death signal), then all
        os._exit(_wait_for(pid))
    import signal  # only here: the namespace path needs no handler

    signal.signal(_SIGTERM, _stop)
    try:
        code = _wait_for(pid)
    except _Stop:
        code = 128 + _SIGKILL
    _kill_descendants()
    os._exit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
