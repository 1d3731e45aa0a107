"""Conversations kept server-side in `data_dir/conversations.sqlite`: a title, the knowledge base they asked,
and their turns (a question and the stored answer, citations included).

Like the feedback store: one short-lived connection per operation, WAL journal and a busy timeout, and an
operation that meets a busy or locked database (by SQLite's error code) is retried with backoff. Limits
(title length, conversations, turns per conversation) are enforced here, so every caller gets them.
"""

from __future__ import annotations

import json
import sqlite3
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from rag.errors import InvalidInput, LimitExceeded, NotFound
from rag.sqlite_retry import connect, run_with_retries
from rag.types import Turn

T = TypeVar("T")

MAX_TITLE_CHARS = 200
AUTO_TITLE_CHARS = 40
DEFAULT_TITLE = "新对话"
# Earlier exchanges handed to the engine as history, and how much of each answer (follow-ups need little).
HISTORY_EXCHANGES = 4
HISTORY_ANSWER_CHARS = 1500
_ID_CHARS = frozenset("0123456789abcdef")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS conversations (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        knowledge_base TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS turns (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        question TEXT NOT NULL,
        answer TEXT NOT NULL,
        answer_id TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS turns_by_conversation ON turns (conversation_id, id)",
)


@dataclass(frozen=True, slots=True)
class ConversationInfo:
    """A conversation without its turns (the sidebar list)."""

    id: str
    title: str
    knowledge_base: str
    created_at: str  # ISO 8601, UTC
    updated_at: str
    turns: int = 0


@dataclass(frozen=True, slots=True)
class StoredTurn:
    """One exchange: the question as asked and the answer as returned (a JSON object)."""

    id: int
    question: str
    answer: dict[str, Any]
    answer_id: str
    created_at: str


@dataclass(frozen=True, slots=True)
class Conversation:
    info: ConversationInfo
    turns: list[StoredTurn] = field(default_factory=list)


def clean_title(title: str) -> str:
    """A title on one line: control characters dropped, whitespace runs collapsed, the default title when nothing
    is left; InvalidInput when too long. Anything else (markup included) is kept verbatim: the UI and the export
    show it as text."""
    if not isinstance(title, str):
        raise InvalidInput("title must be a string")
    try:
        title.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("title is not valid Unicode text (lone surrogate)") from None
    kept = "".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in title)
    kept = " ".join(kept.split())
    if not kept:
        return DEFAULT_TITLE
    if len(kept) > MAX_TITLE_CHARS:
        raise InvalidInput(f"title is {len(kept)} characters long; the limit is {MAX_TITLE_CHARS}")
    return kept


def auto_title(question: str) -> str:
    """The first words of a question, as a conversation's title."""
    text = " ".join("".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in question).split())
    return (text[:AUTO_TITLE_CHARS] + "…") if len(text) > AUTO_TITLE_CHARS else (text or DEFAULT_TITLE)


def history_of(turns: list[StoredTurn]) -> list[Turn]:
    """The last exchanges as engine history (refusals and answers alike: a follow-up may refer to either)."""
    history: list[Turn] = []
    for turn in turns[-HISTORY_EXCHANGES:]:
        history.append(Turn("user", turn.question))
        history.append(Turn("assistant", str(turn.answer.get("text", ""))[:HISTORY_ANSWER_CHARS]))
    return history


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _valid_id(conversation_id: str) -> bool:
    return len(conversation_id) == 32 and set(conversation_id) <= _ID_CHARS


class ConversationStore:
    """Create, list, show, rename and delete conversations, and add or replace their turns."""

    def __init__(
        self,
        path: Path,
        *,
        max_conversations: int = 1000,
        max_turns: int = 200,
        busy_timeout_ms: int = 5000,
        retries: int = 6,
    ) -> None:
        self.path = Path(path)
        self.max_conversations = max_conversations
        self.max_turns = max_turns
        self.busy_timeout_ms = busy_timeout_ms
        self.retries = retries
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._run(lambda conn: conn.execute("PRAGMA journal_mode=WAL").fetchone(), transaction=False)

        def create(conn: sqlite3.Connection) -> None:
            for statement in _SCHEMA:
                conn.execute(statement)

        self._run(create)

    # --- conversations --------------------------------------------------------------------------

    def create(self, title: str | None, knowledge_base: str) -> ConversationInfo:
        """A new, empty conversation; LimitExceeded when `max_conversations` are stored already."""
        shown = clean_title(title) if title is not None else DEFAULT_TITLE
        now = _now()
        info = ConversationInfo(uuid.uuid4().hex, shown, knowledge_base, now, now, 0)

        def insert(conn: sqlite3.Connection) -> None:
            count = conn.execute("SELECT COUNT(*) FROM conversations").fetchone()[0]
            if count >= self.max_conversations:
                raise LimitExceeded(
                    f"there are {count} conversations; the limit is {self.max_conversations}: delete some first"
                )
            conn.execute(
                "INSERT INTO conversations (id, title, knowledge_base, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                (info.id, info.title, info.knowledge_base, info.created_at, info.updated_at),
            )

        self._run(insert)
        return info

    def list(self, *, limit: int = 100, offset: int = 0) -> list[ConversationInfo]:
        """Conversations, most recently updated first."""

        def select(conn: sqlite3.Connection) -> list[ConversationInfo]:
            rows = conn.execute(
                "SELECT c.id, c.title, c.knowledge_base, c.created_at, c.updated_at, "
                "(SELECT COUNT(*) FROM turns t WHERE t.conversation_id = c.id) "
                "FROM conversations c ORDER BY c.updated_at DESC, c.rowid DESC LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
            return [ConversationInfo(*row) for row in rows]

        return self._run(select)

    def get(self, conversation_id: str) -> Conversation:
        """A conversation with all its turns; NotFound for an unknown id."""

        def select(conn: sqlite3.Connection) -> Conversation:
            info = self._info(conn, conversation_id)
            rows = conn.execute(
                "SELECT id, question, answer, answer_id, created_at FROM turns WHERE conversation_id = ? ORDER BY id",
                (conversation_id,),
            ).fetchall()
            turns = [StoredTurn(r[0], r[1], json.loads(r[2]), r[3], r[4]) for r in rows]
            return Conversation(info, turns)

        return self._run(select)

    def rename(self, conversation_id: str, title: str) -> ConversationInfo:
        shown = clean_title(title)

        def update(conn: sqlite3.Connection) -> ConversationInfo:
            self._info(conn, conversation_id)
            conn.execute(
                "UPDATE conversations SET title = ?, updated_at = ? WHERE id = ?", (shown, _now(), conversation_id)
            )
            return self._info(conn, conversation_id)

        return self._run(update)

    def delete(self, conversation_id: str) -> None:
        """Remove a conversation and its turns; NotFound for an unknown id."""

        def remove(conn: sqlite3.Connection) -> None:
            self._info(conn, conversation_id)
            conn.execute("DELETE FROM turns WHERE conversation_id = ?", (conversation_id,))
            conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

        self._run(remove)

    # --- turns ----------------------------------------------------------------------------------

    def check_room(self, conversation_id: str) -> list[StoredTurn]:
        """The turns so far, after checking another one may be added (NotFound, LimitExceeded)."""
        conversation = self.get(conversation_id)
        if len(conversation.turns) >= self.max_turns:
            raise LimitExceeded(
                f"this conversation has {len(conversation.turns)} questions; the limit is {self.max_turns}: "
                "start a new conversation"
            )
        return conversation.turns

    def add_turn(self, conversation_id: str, question: str, answer: dict[str, Any]) -> StoredTurn:
        """Append an exchange. A conversation still under its default title is named after its first question."""
        created = _now()
        body = json.dumps(answer, ensure_ascii=False)
        answer_id = str(answer.get("answer_id") or "")

        def insert(conn: sqlite3.Connection) -> int:
            info = self._info(conn, conversation_id)
            if info.turns >= self.max_turns:
                raise LimitExceeded(f"this conversation has {info.turns} questions; the limit is {self.max_turns}")
            cur = conn.execute(
                "INSERT INTO turns (conversation_id, question, answer, answer_id, created_at) VALUES (?, ?, ?, ?, ?)",
                (conversation_id, question, body, answer_id, created),
            )
            title = auto_title(question) if info.turns == 0 and info.title == DEFAULT_TITLE else info.title
            conn.execute(
                "UPDATE conversations SET title = ?, updated_at = ? WHERE id = ?", (title, created, conversation_id)
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

        turn_id = self._run(insert)
        return StoredTurn(turn_id, question, answer, answer_id, created)

    def replace_last_answer(self, conversation_id: str, answer: dict[str, Any]) -> StoredTurn:
        """Put a regenerated answer in place of the last one; NotFound when there is no turn yet."""
        body = json.dumps(answer, ensure_ascii=False)
        answer_id = str(answer.get("answer_id") or "")

        def update(conn: sqlite3.Connection) -> StoredTurn:
            self._info(conn, conversation_id)
            row = conn.execute(
                "SELECT id, question, created_at FROM turns WHERE conversation_id = ? ORDER BY id DESC LIMIT 1",
                (conversation_id,),
            ).fetchone()
            if row is None:
                raise NotFound("this conversation has no answer to regenerate")
            conn.execute("UPDATE turns SET answer = ?, answer_id = ? WHERE id = ?", (body, answer_id, row[0]))
            conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (_now(), conversation_id))
            return StoredTurn(row[0], row[1], answer, answer_id, row[2])

        return self._run(update)

    # --- plumbing -------------------------------------------------------------------------------

    def _info(self, conn: sqlite3.Connection, conversation_id: str) -> ConversationInfo:
        row = None
        if _valid_id(conversation_id):
            row = conn.execute(
                "SELECT c.id, c.title, c.knowledge_base, c.created_at, c.updated_at, "
                "(SELECT COUNT(*) FROM turns t WHERE t.conversation_id = c.id) FROM conversations c WHERE c.id = ?",
                (conversation_id,),
            ).fetchone()
        if row is None:
            raise NotFound("no such conversation (it may have been deleted)")
        return ConversationInfo(*row)

    def _connect(self) -> sqlite3.Connection:
        return connect(self.path, self.busy_timeout_ms)

    def _run(self, operation: Callable[[sqlite3.Connection], T], *, transaction: bool = True) -> T:
        """Run `operation` in its own transaction, retrying while the database is busy or locked."""
        return run_with_retries(
            self.path, operation, busy_timeout_ms=self.busy_timeout_ms, retries=self.retries, transaction=transaction
        )
