"""Kernel-level confinement for the pass@1 sandbox (Linux): no network, no writes outside the work folder.

Two layers, both unprivileged where the kernel allows, applied in the child between fork and exec:

- **Network**: a fresh, empty network namespace (`unshare(CLONE_NEWNET)`; via a new user namespace when
  the caller lacks CAP_SYS_ADMIN). It has only a loopback device that is down, so every connect, DNS lookup
  or UDP send fails.
- **Filesystem and signals**: a Landlock ruleset (kernel ≥ 5.13) that handles every write-like access
  (write, truncate, create, remove, rename/link) and grants them only beneath the writable folders, plus —
  when the kernel's Landlock ABI has them — TCP bind/connect (ABI 4) and signals / abstract UNIX sockets
  to processes outside the sandbox (ABI 6). Reading stays allowed (the interpreter and its stdlib must
  load); secrets are kept out by the scrubbed environment instead.

Hand-written with ctypes because no maintained Python binding covers Landlock and unshare together and a
dependency with C extensions for ~100 lines of syscalls is not worth it. Each layer reports whether it
took effect; `available()` tells the sandbox (and the tests) what this kernel offers.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from collections.abc import Sequence
from functools import cache

_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000
_PR_SET_NO_NEW_PRIVS = 38
_SYS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}  # create_ruleset, add_rule, restrict_self
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

# LANDLOCK_ACCESS_FS_*: write-like rights (reads and execute are left alone)
_FS_WRITE = 1 << 1
_FS_REMOVE_DIR, _FS_REMOVE_FILE = 1 << 4, 1 << 5
_FS_MAKE = sum(1 << b for b in range(6, 13))  # char, dir, reg, sock, fifo, block, sym
_FS_REFER, _FS_TRUNCATE = 1 << 13, 1 << 14  # ABI 2, ABI 3
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6

LIBC = (
    ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
)  # also used by sandbox.py


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


@cache
def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is missing or disabled (or not Linux)."""
    numbers = _SYS.get(platform.machine())
    if LIBC is None or numbers is None:
        return 0
    version = LIBC.syscall(numbers[0], None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(int(version), 0)


def available() -> dict[str, bool]:
    """Which layers this machine can apply (probed in a throw-away child for the namespace)."""
    return {
        "network_namespace": _probe_netns(),
        "landlock_fs": landlock_abi() >= 1,
        "landlock_net": landlock_abi() >= 4,
        "landlock_scope": landlock_abi() >= 6,
    }


@cache
def _probe_netns() -> bool:
    if LIBC is None:
        return False
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os._exit(0 if isolate_network() else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def isolate_network() -> bool:
    """Move the calling process into a new, empty network namespace. Async-signal-safe enough for a
    preexec function (two syscalls, no allocation in Python beyond ints). False when not permitted."""
    if LIBC is None:
        return False
    if LIBC.unshare(_CLONE_NEWNET) == 0:
        return True
    return LIBC.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) == 0


def restrict_writes(writable: Sequence[str]) -> bool:
    """Landlock the calling process: write-like file access only beneath `writable` (and /dev/null),
    no TCP bind/connect, no signals or abstract sockets out of the sandbox, as far as the ABI allows.
    Irreversible for the process and its children. False when Landlock is unavailable."""
    abi = landlock_abi()
    if abi < 1:
        return False
    create, add_rule, restrict = _SYS[platform.machine()]
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
        if (
            LIBC.syscall(
                add_rule,
                ctypes.c_int(ruleset_fd),
                ctypes.c_int(_RULE_PATH_BENEATH),
                ctypes.byref(rule),
                ctypes.c_uint32(0),
            )
            != 0
        ):
            raise OSError(ctypes.get_errno(), f"landlock_add_rule({path})")
    finally:
        os.close(fd)
