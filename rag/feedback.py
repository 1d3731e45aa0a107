"""User feedback on answers (thumbs up/down with an optional comment, per knowledge base).

`FeedbackStore` is what the API uses; `open_feedback_store(settings)` picks the implementation from
`RAG_FEEDBACK_URL`: unset = `SqliteFeedbackStore` in `data_dir/feedback.sqlite` (one machine), and
`postgresql://...` = `rag.feedback_pg.PostgresFeedbackStore` (several API replicas share it).

The SQLite store opens one short-lived connection per operation, with a WAL journal and a busy timeout, so
concurrent API workers can write at once; an operation that still meets "database is locked" is retried
with backoff. A file written before feedback had a knowledge base gains the `kb` column in place.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

from rag.errors import FeedbackUnavailable, InvalidInput, NotFound
from rag.sqlite_retry import connect, run_with_retries

if TYPE_CHECKING:
    from rag.config import Settings

Rating = Literal["up", "down"]
T = TypeVar("T")

DEFAULT_KB = "default"
MAX_ID = 2**63  # ids are signed 64-bit in SQLite and PostgreSQL (BIGINT): no row can have one beyond
COLUMNS = "id, created_at, rating, answer_id, question, comment, kb"
URL_SETTING = "RAG_FEEDBACK_URL"
POSTGRES_SCHEMES = ("postgresql", "postgres")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    rating TEXT NOT NULL CHECK (rating IN ('up', 'down')),
    answer_id TEXT,
    question TEXT,
    comment TEXT,
    kb TEXT NOT NULL DEFAULT 'default'
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
    kb: str = DEFAULT_KB  # the knowledge base the answer came from


class FeedbackStore(Protocol):
    """Where feedback is kept: add, list, count, delete, amend, and the latest entry of given answers."""

    def add(
        self,
        rating: str | int,
        *,
        answer_id: str | None = None,
        question: str | None = None,
        comment: str | None = None,
        kb: str = DEFAULT_KB,
    ) -> FeedbackEntry: ...

    def list(self, *, limit: int = 100, offset: int = 0, kb: str | None = None) -> list[FeedbackEntry]: ...

    def count(self, *, kb: str | None = None) -> int: ...

    def delete(self, entry_id: int) -> None: ...

    def amend(
        self, entry_id: int, *, rating: str | int | None = None, comment: str | None = None
    ) -> FeedbackEntry: ...

    def for_answers(self, answer_ids: list[str]) -> dict[str, FeedbackEntry]: ...


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


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def check_entry_id(entry_id: int) -> None:
    if not 0 < entry_id < MAX_ID:  # beyond a signed 64-bit id no row can have it (and binding would overflow)
        raise NotFound(f"no feedback entry {entry_id}")


def redact_url(url: str) -> str:
    """The URL without its password (for messages and logs): postgresql://user:***@host:5432/db, and a
    `password=` query parameter as `password=***`."""
    try:
        parts = urlsplit(url)
        if parts.password is not None:
            netloc = parts.netloc.rsplit("@", 1)[1]
            parts = parts._replace(netloc=f"{parts.username or ''}:***@{netloc}")
        query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
        return parts._replace(query=query).geturl()
    except ValueError:
        return "<unparsable URL>"


def check_feedback_url(settings: Settings) -> str | None:
    """The PostgreSQL URL of `settings.feedback_url`, or None for SQLite (unset or blank); any other URL
    raises FeedbackUnavailable naming RAG_FEEDBACK_URL (its password is never shown). Connects to nothing."""
    url = settings.feedback_url.get_secret_value().strip() if settings.feedback_url else ""
    if not url:
        return None
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in POSTGRES_SCHEMES:  # the URL itself is not repeated: it may hold a password
        given = f"a {scheme!r} URL" if scheme else "a value without a scheme"
        raise FeedbackUnavailable(
            f"{URL_SETTING} is {given}, which is not supported: leave it unset for SQLite in the data dir, "
            "or use postgresql://user:password@host:5432/database"
        )
    return url


def open_feedback_store(settings: Settings) -> FeedbackStore:
    """The store `settings.feedback_url` names: SQLite in the data dir when unset, else PostgreSQL (connected
    and its table made ready now, so an unreachable server fails at startup with FeedbackUnavailable)."""
    url = check_feedback_url(settings)
    if url is None:
        return SqliteFeedbackStore(settings.data_dir / "feedback.sqlite")
    from rag.feedback_pg import PostgresFeedbackStore

    return PostgresFeedbackStore(url)


class SqliteFeedbackStore:
    """Add, list and delete feedback entries in one SQLite file."""

    def __init__(self, path: Path, *, busy_timeout_ms: int = 5000, retries: int = 6) -> None:
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self.retries = retries
        self.path.parent.mkdir(parents=True, exist_ok=True)

        self._run(lambda conn: conn.execute("PRAGMA journal_mode=WAL").fetchone(), transaction=False)
        self._run(self._create_or_migrate)

    @staticmethod
    def _create_or_migrate(conn: sqlite3.Connection) -> None:
        conn.execute(_SCHEMA)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(feedback)")}
        if "kb" not in columns:  # written before knowledge bases: its entries belong to the default one
            conn.execute(f"ALTER TABLE feedback ADD COLUMN kb TEXT NOT NULL DEFAULT '{DEFAULT_KB}'")
        conn.execute("CREATE INDEX IF NOT EXISTS feedback_by_kb ON feedback (kb, id)")

    def add(
        self,
        rating: str | int,
        *,
        answer_id: str | None = None,
        question: str | None = None,
        comment: str | None = None,
        kb: str = DEFAULT_KB,
    ) -> FeedbackEntry:
        """Store one entry and return it with its id."""
        normalized = normalize_rating(rating)
        created = now_iso()

        def insert(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO feedback (created_at, rating, answer_id, question, comment, kb) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (created, normalized, answer_id, question, comment, kb),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

        entry_id = self._run(insert)
        return FeedbackEntry(entry_id, created, normalized, answer_id, question, comment, kb)

    def list(self, *, limit: int = 100, offset: int = 0, kb: str | None = None) -> list[FeedbackEntry]:
        """Entries (of one knowledge base, or all), newest first."""
        where, params = ("WHERE kb = ? ", (kb,)) if kb is not None else ("", ())

        def select(conn: sqlite3.Connection) -> list[FeedbackEntry]:
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM feedback {where}ORDER BY id DESC LIMIT ? OFFSET ?",
                (*params, limit, offset),
            ).fetchall()
            return [FeedbackEntry(*row) for row in rows]

        return self._run(select)

    def count(self, *, kb: str | None = None) -> int:
        """How many entries are stored (of one knowledge base, or all)."""
        where, params = ("WHERE kb = ?", (kb,)) if kb is not None else ("", ())
        query = f"SELECT COUNT(*) FROM feedback {where}"
        return self._run(lambda conn: conn.execute(query, params).fetchone()[0])

    def delete(self, entry_id: int) -> None:
        """Remove one entry; NotFound when there is no such id."""
        check_entry_id(entry_id)
        deleted = self._run(lambda conn: conn.execute("DELETE FROM feedback WHERE id = ?", (entry_id,)).rowcount)
        if not deleted:
            raise NotFound(f"no feedback entry {entry_id}")

    def amend(self, entry_id: int, *, rating: str | int | None = None, comment: str | None = None) -> FeedbackEntry:
        """Change the rating and/or the comment of an entry (a one-click rating, then its comment)."""
        check_entry_id(entry_id)
        normalized = normalize_rating(rating) if rating is not None else None

        def update(conn: sqlite3.Connection) -> FeedbackEntry:
            row = conn.execute(f"SELECT {COLUMNS} FROM feedback WHERE id = ?", (entry_id,)).fetchone()
            if row is None:
                raise NotFound(f"no feedback entry {entry_id}")
            entry = FeedbackEntry(*row)
            new_rating = normalized or entry.rating
            new_comment = entry.comment if comment is None else (comment or None)
            conn.execute("UPDATE feedback SET rating = ?, comment = ? WHERE id = ?", (new_rating, new_comment, entry_id))
            return FeedbackEntry(
                entry.id, entry.created_at, new_rating, entry.answer_id, entry.question, new_comment, entry.kb
            )

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
                marks = ",".join("?" * len(part))
                query = f"SELECT {COLUMNS} FROM feedback WHERE answer_id IN ({marks}) ORDER BY id"
                rows = conn.execute(query, part).fetchall()
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
