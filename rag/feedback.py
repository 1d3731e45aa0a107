"""User feedback on answers (thumbs up/down with an optional comment), kept in `data_dir/feedback.sqlite`.

One short-lived connection per operation, WAL journal and a busy timeout, so concurrent API workers can
write at once; an operation that still meets "database is locked" is retried with backoff.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypeVar

from rag.errors import InvalidInput, NotFound
from rag.sqlite_retry import connect, run_with_retries

Rating = Literal["up", "down"]
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    rating TEXT NOT NULL CHECK (rating IN ('up', 'down')),
    answer_id TEXT,
    question TEXT,
    comment TEXT
)
"""


@dataclass(frozen=True, slots=True)
class FeedbackEntry:
    """One stored piece of feedback."""

    id: int
    created_at: str  # ISO 8601, UTC
    rating: Rating
    answer_id: str | None = None
    question: str | None = None
    comment: str | None = None


def normalize_rating(value: str | int) -> Rating:
    """"up"/"down" (any case) or +1/-1 -> "up"/"down"; anything else is invalid input."""
    if isinstance(value, bool):
        raise InvalidInput("rating must be 'up', 'down', 1 or -1")
    if isinstance(value, int):
        if value in (1, -1):
            return "up" if value == 1 else "down"
    elif isinstance(value, str):
        text = value.strip().lower()
        if text in ("up", "+1", "1"):
            return "up"
        if text in ("down", "-1"):
            return "down"
    raise InvalidInput("rating must be 'up', 'down', 1 or -1")


class FeedbackStore:
    """Add, list and delete feedback entries in one SQLite file."""

    def __init__(self, path: Path, *, busy_timeout_ms: int = 5000, retries: int = 6) -> None:
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self.retries = retries
        self.path.parent.mkdir(parents=True, exist_ok=True)

        self._run(lambda conn: conn.execute("PRAGMA journal_mode=WAL").fetchone(), transaction=False)
        self._run(lambda conn: conn.execute(_SCHEMA))

    def add(
        self,
        rating: str | int,
        *,
        answer_id: str | None = None,
        question: str | None = None,
        comment: str | None = None,
    ) -> FeedbackEntry:
        """Store one entry and return it with its id."""
        normalized = normalize_rating(rating)
        created = datetime.now(UTC).isoformat(timespec="milliseconds")

        def insert(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO feedback (created_at, rating, answer_id, question, comment) VALUES (?, ?, ?, ?, ?)",
                (created, normalized, answer_id, question, comment),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

        entry_id = self._run(insert)
        return FeedbackEntry(entry_id, created, normalized, answer_id, question, comment)

    def list(self, *, limit: int = 100, offset: int = 0) -> list[FeedbackEntry]:
        """Entries, newest first."""

        def select(conn: sqlite3.Connection) -> list[FeedbackEntry]:
            rows = conn.execute(
                "SELECT id, created_at, rating, answer_id, question, comment FROM feedback "
                "ORDER BY id DESC LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
            return [FeedbackEntry(*row) for row in rows]

        return self._run(select)

    def count(self) -> int:
        """How many entries are stored."""
        return self._run(lambda conn: conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0])

    def delete(self, entry_id: int) -> None:
        """Remove one entry; NotFound when there is no such id."""
        if not 0 < entry_id < 2**63:  # beyond SQLite's INTEGER: no row can have it (and binding would overflow)
            raise NotFound(f"no feedback entry {entry_id}")
        deleted = self._run(lambda conn: conn.execute("DELETE FROM feedback WHERE id = ?", (entry_id,)).rowcount)
        if not deleted:
            raise NotFound(f"no feedback entry {entry_id}")

    def amend(self, entry_id: int, *, rating: str | int | None = None, comment: str | None = None) -> FeedbackEntry:
        """Change the rating and/or the comment of an entry (a one-click rating, then its comment)."""
        if not 0 < entry_id < 2**63:
            raise NotFound(f"no feedback entry {entry_id}")
        normalized = normalize_rating(rating) if rating is not None else None

        def update(conn: sqlite3.Connection) -> FeedbackEntry:
            row = conn.execute(
                "SELECT id, created_at, rating, answer_id, question, comment FROM feedback WHERE id = ?", (entry_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"no feedback entry {entry_id}")
            entry = FeedbackEntry(*row)
            new_rating = normalized or entry.rating
            new_comment = entry.comment if comment is None else (comment or None)
            conn.execute("UPDATE feedback SET rating = ?, comment = ? WHERE id = ?", (new_rating, new_comment, entry_id))
            return FeedbackEntry(entry.id, entry.created_at, new_rating, entry.answer_id, entry.question, new_comment)

        return self._run(update)

    def for_answers(self, answer_ids: list[str]) -> dict[str, FeedbackEntry]:
        """The latest entry for each of `answer_ids` that has one (feedback shown with stored answers)."""
        wanted = [a for a in dict.fromkeys(answer_ids) if a]
        if not wanted:
            return {}

        def select(conn: sqlite3.Connection) -> dict[str, FeedbackEntry]:
            found: dict[str, FeedbackEntry] = {}
            for start in range(0, len(wanted), 500):  # SQLite's limit on bound parameters
                part = wanted[start : start + 500]
                rows = conn.execute(
                    "SELECT id, created_at, rating, answer_id, question, comment FROM feedback "
                    f"WHERE answer_id IN ({','.join('?' * len(part))}) ORDER BY id",
                    part,
                ).fetchall()
                found.update((row[3], FeedbackEntry(*row)) for row in rows)
            return found

        return self._run(select)

    # --- plumbing -------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        return connect(self.path, self.busy_timeout_ms)

    def _run(self, operation: Callable[[sqlite3.Connection], T], *, transaction: bool = True) -> T:
        """Run `operation` in its own transaction, retrying while the database is busy or locked."""
        return run_with_retries(
            self.path, operation, busy_timeout_ms=self.busy_timeout_ms, retries=self.retries, transaction=transaction
        )
