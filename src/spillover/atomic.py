"""Atomic, durable file-system writes: a reader sees the old content or the complete new one, never a
half-write, and what was renamed into place survives a power cut (files and folder entries are fsynced).

Durability matters because the results store commits a job as done *after* its artifacts are written:
without the fsyncs, a crash of the machine could keep the committed 'done' and lose the artifact.
One writer per target is assumed (a study's job folder belongs to the one run executing that job, by its
claim in the store; a study's shared outputs are written under `exclusive`), so temporaries a killed
writer left behind for the same target are removed before writing it again.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder next to `target`; on success it replaces `target` (removed first if present)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target.parent, glob.escape(target.name))
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target.name), dir=target.parent))
    os.chmod(tmp, 0o755)  # mkdtemp creates 0700; results are meant to be shared like any written folder
    try:
        yield tmp
        _fsync_tree(tmp)
        old = _set_aside(target) if target.exists() else None
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_tree(path: Path) -> None:
    """Delete a folder at once: it is renamed to a temporary name first, so a kill midway leaves a
    temporary (removed by the next write of that name), never a half-deleted folder under the real name."""
    shutil.rmtree(_set_aside(path), ignore_errors=True)


def _set_aside(path: Path) -> Path:
    aside = path.parent / f"{_temp_prefix(path.name)}old-{os.getpid()}-{time.monotonic_ns()}"
    os.replace(path, aside)
    return aside


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to a temporary file in the same folder, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, glob.escape(path.name))
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), dir=path.parent)
    os.fchmod(fd, 0o644)  # mkstemp creates 0600; results are meant to be shared like any written file
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `lock_file` (created if missing) for the block; other holders
    wait. The kernel releases it when the holder dies, so a killed writer never blocks the next one.
    Without `fcntl` (Windows) nothing is locked."""
    if sys.platform == "win32":
        yield
        return
    import fcntl

    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def remove_stale_temps(folder: Path, name: str) -> None:
    """Delete the temporaries that killed writers of `name` (a glob pattern) left in `folder`."""
    for old in folder.glob(_temp_prefix(name) + "*"):
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def _temp_prefix(name: str) -> str:
    return f".{name}.tmp-"


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(folder))


def _fsync_dir(folder: Path) -> None:
    """Persist a folder's entries (a rename into it); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
