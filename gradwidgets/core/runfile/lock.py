"""The one-writer lock of a run file (``<run file>.lock``, holding the writer's PID) and its reader."""

from __future__ import annotations

import os
from pathlib import Path

from .format import RunFileLockedError

__all__ = ["RunLock", "lock_path", "lock_owner", "writer_alive"]

MAX_LOCK_BYTES = 64


def lock_path(run_path: str | os.PathLike[str]) -> Path:
    path = Path(run_path)
    return path.with_name(path.name + ".lock")


def lock_owner(run_path: str | os.PathLike[str]) -> int | None:
    """The PID written in the run file's lock, or None (no lock, unreadable, not a PID)."""
    try:
        with open(lock_path(run_path), "rb") as handle:
            text = handle.read(MAX_LOCK_BYTES).decode("ascii", errors="strict").strip()
        pid = int(text)
    except (OSError, ValueError):
        return None
    return pid if pid > 0 else None


def writer_alive(run_path: str | os.PathLike[str]) -> bool:
    """True while a live process on this machine holds the run file's lock (its PID is in ``<file>.lock``)."""
    pid = lock_owner(run_path)
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


class RunLock:
    """An exclusive advisory lock on ``<run file>.lock`` holding the writer's PID; the OS drops it if we die."""

    def __init__(self, path: Path) -> None:
        self.path = lock_path(path)
        self._fd: int | None = None

    def acquire(self, run_path: Path) -> None:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                owner = os.pread(fd, MAX_LOCK_BYTES, 0).decode(errors="replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise RunFileLockedError(
                f"{run_path} is being written by another process (PID {owner}, lock {self.path}); one writer per "
                "run file: give each run (or each rank that writes) its own path"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)  # closing drops the flock
        self._fd = None
