"""The writer lock of an index directory: one ingest publishes at a time, across threads and processes.

`WriteLock` is an fcntl.flock on `index_dir/.lock` that dies with its process, so a killed writer never
leaves a stale lock; `lock_held_here` tells a publish whether this process already holds it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rag.errors import IngestBusy

LOCK_FILE = ".lock"

_held_locks: set[str] = set()  # index dirs whose WriteLock this process holds (so publish can check)
_held_guard = threading.Lock()


class WriteLock:
    """Exclusive writer lock on `index_dir/.lock` (fcntl.flock); only one ingest publishes at a time.

    Waits up to `timeout` seconds for a busy lock, then raises IngestBusy. The holder's pid is written into
    the lock file for diagnostics; the lock itself dies with the process (no stale-lock cleanup needed).
    """

    def __init__(self, index_dir: Path, *, timeout: float = 0.0, poll: float = 0.05) -> None:
        self.index_dir = Path(index_dir)
        self.path = self.index_dir / LOCK_FILE
        self.timeout = timeout
        self.poll = poll
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise IngestBusy after `timeout` seconds."""
        if self._fd is not None:
            raise RuntimeError("WriteLock is not reentrant")
        self.index_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + max(self.timeout, 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise IngestBusy(f"another ingest is running (lock {self.path}{holder})") from None
                time.sleep(self.poll)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        with _held_guard:
            _held_locks.add(_lock_key(self.index_dir))

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self._fd is None:
            return
        with _held_guard:
            _held_locks.discard(_lock_key(self.index_dir))
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> WriteLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock_key(index_dir: Path) -> str:
    return str(Path(index_dir).resolve())


def _read_holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode().strip() or "0")
        if pid > 0:
            return f", held by pid {pid}"
    return ""


def lock_held_here(index_dir: Path) -> bool:
    """True when this process holds the WriteLock of `index_dir` (through any WriteLock object)."""
    with _held_guard:
        return _lock_key(index_dir) in _held_locks


__all__ = ["LOCK_FILE", "WriteLock", "lock_held_here"]


def unless_busy(index_dir: Path, action: Callable[[], list[str]]) -> list[str]:
    """Run `action` holding the write lock of `index_dir` (or under this process's own hold of it); when another
    writer holds it, do nothing and return [] (a cleanup must not touch a build in progress)."""
    if lock_held_here(index_dir):
        return action()
    try:
        with WriteLock(index_dir, timeout=0.0):
            return action()
    except IngestBusy:
        return []
