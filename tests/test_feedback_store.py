"""The feedback store on both backends: SQLite in the data dir (default) and a real PostgreSQL server
(`RAG_FEEDBACK_URL`), started once per session with initdb + pg_ctl in a temp dir (tests/pg.py).

The same test functions run on both; then the choice by URL, clear errors for a bad or unreachable URL (the
password never shown), the in-place `kb` migration of an old feedback file, and two API servers (replicas)
sharing one PostgreSQL over real HTTP.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from live import LiveServer
from pg import PASSWORD, PostgresServer, free_port

from rag.config import Settings
from rag.errors import FeedbackUnavailable, InvalidInput, NotFound
from rag.feedback import FeedbackStore, SqliteFeedbackStore, open_feedback_store, redact_url
from rag.feedback_pg import PostgresFeedbackStore

RAG = Path(sys.executable).parent / "rag"
_databases = itertools.count()

OLD_SCHEMA = """CREATE TABLE feedback (
    id {id},
    created_at TEXT NOT NULL,
    rating TEXT NOT NULL CHECK (rating IN ('up', 'down')),
    answer_id TEXT,
    question TEXT,
    comment TEXT
)"""


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        print(f"PostgreSQL started in {server.startup_seconds:.2f} s")
        yield server


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """A fresh, empty database on the session's server (CREATE DATABASE is far cheaper than a new server)."""
    name = f"t{next(_databases)}_{os.getpid()}"
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(backend name, where): a SQLite file path or a PostgreSQL URL of an empty database."""
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "feedback.sqlite")
    return "postgresql", request.getfixturevalue("pg_url")


def _open(backend: tuple[str, str]) -> FeedbackStore:
    kind, where = backend
    return SqliteFeedbackStore(Path(where)) if kind == "sqlite" else PostgresFeedbackStore(where)


def _raw(backend: tuple[str, str], sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run SQL straight on the backend's database, bypassing the store."""
    kind, where = backend
    if kind == "sqlite":
        with sqlite3.connect(where) as conn:
            return conn.execute(sql, params).fetchall()
    with psycopg.connect(where, autocommit=True) as conn:
        cur = conn.execute(sql.replace("?", "%s"), params)
        return cur.fetchall() if cur.description else []


# --- the same behaviour on both backends ------------------------------------------------------------------


def test_add_list_amend_delete(backend: tuple[str, str]) -> None:
    store = _open(backend)
    first = store.add("up", answer_id="a1", question="LoRA 是什么？", comment="清楚")
    second = store.add(-1, answer_id="a2", question="RAG?")
    assert (first.rating, first.kb, first.comment) == ("up", "default", "清楚")
    assert second.id > first.id and second.rating == "down" and second.comment is None
    assert store.list() == [second, first]  # newest first, every field read back as written
    assert store.list(limit=1, offset=1) == [first]
    assert store.count() == 2

    amended = store.amend(second.id, rating="up", comment="后来看懂了")
    assert (amended.rating, amended.comment, amended.created_at) == ("up", "后来看懂了", second.created_at)
    assert store.for_answers(["a2", "missing", "a1"]) == {"a1": first, "a2": amended}

    store.delete(first.id)
    assert [e.id for e in store.list()] == [second.id]
    with pytest.raises(NotFound):
        store.delete(first.id)
    with pytest.raises(NotFound):
        store.amend(2**63, rating="up")  # beyond a signed 64-bit id: NotFound, not an overflow
    with pytest.raises(InvalidInput):
        store.add("sideways")
    assert store.list(offset=2**63 - 1) == []


def test_entries_carry_their_knowledge_base_and_filter_by_it(backend: tuple[str, str]) -> None:
    store = _open(backend)
    store.add("up", answer_id="d1")
    work = [store.add("down", answer_id=f"w{i}", kb="work") for i in range(3)]
    store.add("up", answer_id="p1", kb="personal")
    assert [e.answer_id for e in store.list(kb="work")] == ["w2", "w1", "w0"]
    assert {e.kb for e in store.list(kb="work")} == {"work"} and store.list(kb="work")[0] == work[-1]
    assert [e.answer_id for e in store.list(kb="default")] == ["d1"]
    assert store.list(kb="nowhere") == [] and store.count(kb="nowhere") == 0
    assert (store.count(), store.count(kb="work"), store.count(kb="personal")) == (5, 3, 1)
    assert [e.kb for e in store.list()] == ["personal", "work", "work", "work", "default"]
    assert store.amend(work[0].id, comment="x").kb == "work"  # amending keeps the knowledge base
    stored = _raw(backend, "SELECT kb, COUNT(*) FROM feedback GROUP BY kb ORDER BY kb")
    assert stored == [("default", 1), ("personal", 1), ("work", 3)]


def test_concurrent_adds_from_threads_are_all_stored(backend: tuple[str, str]) -> None:
    _open(backend)  # the table exists before the threads race
    threads, per_thread = 8, 15
    ids: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def writer(n: int) -> None:
        store = _open(backend)  # each thread its own store, like separate API workers or replicas
        start.wait()
        try:
            for i in range(per_thread):
                entry = store.add("up" if i % 2 else "down", answer_id=f"t{n}-{i}", kb=f"kb{n % 2}")
                with lock:
                    ids.append(entry.id)
        except BaseException as exc:  # surfaced below, with the others
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert errors == []
    store = _open(backend)
    assert len(set(ids)) == threads * per_thread == store.count()
    assert store.count(kb="kb0") == store.count(kb="kb1") == threads * per_thread // 2
    assert {e.answer_id for e in store.list(limit=1000)} == {f"t{n}-{i}" for n in range(threads) for i in range(per_thread)}


def test_an_old_table_without_kb_is_migrated_in_place(backend: tuple[str, str]) -> None:
    """A feedback table written before knowledge bases gains `kb`; its rows belong to `default`, ids go on."""
    kind, _ = backend
    serial = "INTEGER PRIMARY KEY AUTOINCREMENT" if kind == "sqlite" else "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
    _raw(backend, OLD_SCHEMA.format(id=serial))
    for n, rating in enumerate(("up", "down", "up")):
        _raw(
            backend,
            "INSERT INTO feedback (created_at, rating, answer_id, question, comment) VALUES (?, ?, ?, ?, ?)",
            (f"2025-01-0{n + 1}T00:00:00.000+00:00", rating, f"old{n}", "旧问题", None),
        )
    store = _open(backend)
    old = store.list()
    assert [(e.answer_id, e.kb) for e in old] == [("old2", "default"), ("old1", "default"), ("old0", "default")]
    assert old[-1].created_at == "2025-01-01T00:00:00.000+00:00" and old[-1].question == "旧问题"
    new = store.add("up", answer_id="new", kb="work")
    assert new.id > old[0].id
    assert [e.answer_id for e in store.list(kb="default")] == ["old2", "old1", "old0"]
    assert [e.answer_id for e in store.list(kb="work")] == ["new"]
    _open(backend)  # opening again (another worker, a restart) is a no-op
    assert store.count() == 4
    columns = (
        [row[1] for row in _raw(backend, "PRAGMA table_info(feedback)")]
        if kind == "sqlite"
        else [row[0] for row in _raw(backend, "SELECT column_name FROM information_schema.columns "
                                              "WHERE table_name = 'feedback' ORDER BY ordinal_position")]
    )
    assert columns == ["id", "created_at", "rating", "answer_id", "question", "comment", "kb"]


# --- choosing the backend, and bad URLs -----------------------------------------------------------------


def test_the_url_setting_chooses_the_backend(tmp_path: Path, pg_url: str) -> None:
    sqlite_store = open_feedback_store(Settings(_env_file=None, data_dir=tmp_path / "data"))
    assert isinstance(sqlite_store, SqliteFeedbackStore) and sqlite_store.path == tmp_path / "data" / "feedback.sqlite"
    blank = open_feedback_store(Settings(_env_file=None, data_dir=tmp_path / "d2", feedback_url="  "))
    assert isinstance(blank, SqliteFeedbackStore)
    settings = Settings(_env_file=None, data_dir=tmp_path / "d3", feedback_url=pg_url)
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.model_dump())  # a secret setting
    pg_store = open_feedback_store(settings)
    assert isinstance(pg_store, PostgresFeedbackStore)
    pg_store.add("up", answer_id="via-url")
    assert _raw(("postgresql", pg_url), "SELECT answer_id, kb FROM feedback") == [("via-url", "default")]
    assert not (tmp_path / "d3" / "feedback.sqlite").exists()


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("mysql://rag:{pw}@db:3306/notes", "not supported"),
        ("sqlite:///data/feedback.sqlite", "not supported"),
        ("rag:{pw}@localhost/notes", "not supported"),
        ("postgresql://rag:{pw}@127.0.0.1:{port}/postgres", "Connection refused"),
        ("postgresql://rag:{pw}@127.0.0.1:{port}/postgres?foo=bar", "not a valid PostgreSQL URL"),
        ("postgresql://rag:{pw}@[::1/postgres", "not a valid PostgreSQL URL"),
    ],
)
def test_a_bad_url_is_a_clear_error_without_the_password(tmp_path: Path, url: str, needle: str) -> None:
    url = url.format(pw=PASSWORD, port=free_port())  # nothing listens on a fresh free port
    settings = Settings(_env_file=None, data_dir=tmp_path, feedback_url=url)
    with pytest.raises(FeedbackUnavailable) as caught:
        open_feedback_store(settings)
    message = caught.value.message
    assert "RAG_FEEDBACK_URL" in message and needle in message, message
    assert PASSWORD not in message and caught.value.status == 503
    if needle == "not supported":
        from rag.api import create_app

        with pytest.raises(FeedbackUnavailable):  # found before any server or store is started
            create_app(settings)


def test_a_wrong_password_is_refused_clearly(postgres: PostgresServer) -> None:
    url = postgres.url.replace(PASSWORD, "not-the-password-42")
    with pytest.raises(FeedbackUnavailable) as caught:
        PostgresFeedbackStore(url)
    assert "RAG_FEEDBACK_URL" in caught.value.message and "password authentication failed" in caught.value.message
    assert "not-the-password-42" not in caught.value.message


def test_a_database_lost_after_startup_is_a_503_not_a_crash(postgres: PostgresServer, pg_url: str) -> None:
    store = PostgresFeedbackStore(pg_url)
    store.add("up", answer_id="before")
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {pg_url.rsplit('/', 1)[1]} WITH (FORCE)")
    with pytest.raises(FeedbackUnavailable) as caught:  # after its retries: the API answers 503 in the one shape
        store.add("down", answer_id="after")
    assert caught.value.status == 503 and "does not exist" in caught.value.message
    assert PASSWORD not in caught.value.message


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url(f"postgresql://rag:{PASSWORD}@db:5432/fb") == "postgresql://rag:***@db:5432/fb"
    assert redact_url("postgresql://db/fb") == "postgresql://db/fb"
    assert redact_url(f"postgresql://db/fb?user=rag&password={PASSWORD}") == "postgresql://db/fb?user=rag&password=***"


def test_rag_serve_with_an_unreachable_database_stops_with_one_line(tmp_path: Path) -> None:
    url = f"postgresql://rag:{PASSWORD}@127.0.0.1:{free_port()}/feedback"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env |= {"RAG_DATA_DIR": str(tmp_path / "data"), "RAG_FEEDBACK_URL": url, "COLUMNS": "200"}
    proc = subprocess.run(
        [str(RAG), "serve", "--port", str(free_port())], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in output and PASSWORD not in output
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "RAG_FEEDBACK_URL" in lines[0], output
    assert "rag:***@127.0.0.1" in lines[0]


# --- two API replicas sharing PostgreSQL, over HTTP -------------------------------------------------------


def test_two_api_servers_share_feedback_in_postgres(
    tmp_path: Path, embedder: Any, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Two apps with data dirs of their own (no index needed: feedback does not read it) and one PostgreSQL."""
    from rag.api import create_app
    from rag.engine import Engine

    def replica(name: str) -> LiveServer:
        (tmp_path / name / "corpus").mkdir(parents=True)
        settings = Settings(
            _env_file=None, data_dir=tmp_path / name / "data", corpus_dir=tmp_path / name / "corpus",
            feedback_url=pg_url,
        )
        return LiveServer(create_app(settings, engine=Engine(settings, embedder=embedder)))

    with replica("one") as one, replica("two") as two, one.client() as a, two.client() as b:
        posted = a.post("/feedback", json={"answer_id": "ans-1", "question": "LoRA 是什么？", "rating": 1})
        assert posted.status_code == 201, posted.text
        entry = posted.json()
        assert entry["rating"] == "up" and entry["kb"] == "default" and entry["answer_id"] == "ans-1"

        listed = b.get("/feedback").json()["feedback"]  # the other replica reads what the first one stored
        assert listed == [entry]
        rows = _raw(("postgresql", pg_url), "SELECT id, rating, answer_id, question, kb FROM feedback")
        assert rows == [(entry["id"], "up", "ans-1", "LoRA 是什么？", "default")]

        amended = b.patch(f"/feedback/{entry['id']}", json={"comment": "有用"})
        assert amended.status_code == 200 and amended.json()["comment"] == "有用"
        assert a.get("/feedback").json()["feedback"][0]["comment"] == "有用"
        assert a.delete(f"/feedback/{entry['id']}").status_code == 204
        assert b.delete(f"/feedback/{entry['id']}").status_code == 404
        assert _raw(("postgresql", pg_url), "SELECT COUNT(*) FROM feedback") == [(0,)]
    assert not (tmp_path / "one" / "data" / "feedback.sqlite").exists()  # nothing went to SQLite
    assert PASSWORD not in caplog.text
