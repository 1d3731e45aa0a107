"""Small SQLite stores (feedback, conversations): one connection per operation, retried while the database is
busy or locked by another writer, with exponential back-off."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """SQLite's own error code says busy or locked (never the message text)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def connect(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    return conn


def run_with_retries(
    path: Path,
    operation: Callable[[sqlite3.Connection], T],
    *,
    busy_timeout_ms: int,
    retries: int,
    transaction: bool = True,
) -> T:
    """Run `operation` on a fresh connection, in its own IMMEDIATE transaction unless told otherwise."""
    delay = 0.05
    for attempt in range(retries + 1):
        try:
            with closing(connect(path, busy_timeout_ms)) as conn:
                if not transaction:
                    return operation(conn)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = operation(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result
        except sqlite3.OperationalError as exc:
            if attempt >= retries or not is_busy(exc):
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    raise AssertionError("unreachable")
