"""Who holds a job: an owner id naming a process on a host, and whether that process is still alive.

An owner id is `host:pid:start`, where `start` is the process's start time in clock ticks since boot
(Linux `/proc/<pid>/stat`, field 22; empty elsewhere). The start time tells a recycled pid from the
original process, so a claim is never mistaken as alive because an unrelated process got its pid.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    start: str

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        """The owner named by `text`, or None if it is not an owner id (e.g. written by other software)."""
        parts = text.rsplit(":", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        return cls(parts[0], int(parts[1]), parts[2])

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.start}"

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"


def current_owner() -> Owner:
    """This process (computed on each call: a forked child is a different owner)."""
    return owner_of(os.getpid())


def owner_of(pid: int) -> Owner:
    """The process `pid` of this host as an owner."""
    return Owner(socket.gethostname(), pid, _start_time(pid) or "")


def is_stale(owner_text: str | None, heartbeat: float | None, lease: float, now: float | None = None) -> bool:
    """Whether a `running` claim may be taken over: its owner is unknown, or a process of this host that
    has exited (or whose pid was recycled), or a process of another host whose last heartbeat is older
    than `lease` seconds (another host's processes cannot be checked directly)."""
    owner = Owner.parse(owner_text) if owner_text else None
    if owner is None:
        return True  # left by a writer that records no owner (older spillover): nobody can be waiting on it
    if owner.host == socket.gethostname():
        return not process_alive(owner.pid, owner.start)
    now = time.time() if now is None else now
    return heartbeat is None or now - heartbeat > lease


def process_alive(pid: int, start: str = "") -> bool:
    """The process `pid` exists, is not a zombie and (when `start` is given and /proc is there) started at
    `start` — the same process, not a later one that reused its pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    stat = _stat_fields(pid)
    if stat is None:
        return True  # no /proc (macOS): existence is all we can tell
    return stat[0] != "Z" and (not start or stat[19] == start)


def _start_time(pid: int) -> str | None:
    stat = _stat_fields(pid)
    return stat[19] if stat else None


def _stat_fields(pid: int) -> list[str] | None:
    """`/proc/<pid>/stat` from field 3 (state) on; the command name (field 2) may contain spaces."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()
