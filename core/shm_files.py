"""Weights files in shared memory that clean up after a crashed job.

A job killed with SIGKILL cannot remove its files, and `/dev/shm` is RAM. So every file made
here is held, for as long as its maker needs it, by a shared `flock` on an open descriptor; the
kernel drops that lock when the process dies, however it dies. Before a process makes its
first file in a folder, `new_file` sweeps it: a file of ours that nobody holds and that is
older than `STALE_AFTER_S` (never one another process is creating right now) was left by a dead
process, and goes. Locks work across processes and PID namespaces that share the folder, so a
live job's files are never taken, wherever it runs.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
import uuid
from pathlib import Path

logger = logging.getLogger(__name__)

SHM = Path("/dev/shm")
PREFIX = "ergo-weights"
STALE_AFTER_S = 60.0
_held: dict[str, int] = {}  # path -> open descriptor holding the shared lock
_swept: set[Path] = set()  # folders this process has swept


def folder() -> Path:
    """Shared memory where there is one (a temp dir elsewhere)."""
    return SHM if SHM.is_dir() and os.access(SHM, os.W_OK) else Path("/tmp")


def new_file(where: Path | None = None) -> Path:
    """A new, empty file held by this process until `release`; the first one in a folder
    sweeps it of stale files (files a dead job left were there before this process began)."""
    where = where or folder()
    if where not in _swept:
        sweep_stale(where)
        _swept.add(where)
    path = where / f"{PREFIX}-{uuid.uuid4().hex[:12]}.safetensors"
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    _held[str(path)] = fd
    return path


def release(path: str | Path) -> None:
    """Delete a file (readers keep their mappings) and drop this process's hold on it."""
    Path(path).unlink(missing_ok=True)
    fd = _held.pop(str(path), None)
    if fd is not None:
        os.close(fd)


def sweep_stale(where: Path, stale_after_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove our files that no live process holds and that are older than `stale_after_s`."""
    removed = []
    for path in where.glob(f"{PREFIX}-*.safetensors"):
        if _is_stale(path, stale_after_s):
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        logger.warning("removed %d weights files left by dead processes in %s", len(removed), where)
    return removed


def _is_stale(path: Path, stale_after_s: float) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        if time.time() - os.fstat(fd).st_mtime < stale_after_s:
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while anyone holds it
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # also drops our probe lock
