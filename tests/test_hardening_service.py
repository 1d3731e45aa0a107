"""The service from outside: a time budget on every engine call, slow and idle connections against `rag serve`,
the OpenAPI document against what the service does (docs, security scheme, HEAD, OPTIONS, strict query flags),
and typed error handling inside (the feedback store's busy database).

Every wait is bounded (client or socket timeouts); nothing asserts a duration.
"""

from __future__ import annotations

import contextlib
import select
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_llm import FakeLLM, slow
from hostile import ServeProcess
from live import LiveServer, assert_error, read_sse
from pydantic import SecretStr

from rag.api import create_app
from rag.api.schemas import NOT_BLANK_PATTERN
from rag.config import Settings
from rag.engine import Engine
from rag.feedback import SqliteFeedbackStore

QUESTION = "LoRA 微调里最重要的超参数是什么？"
KEY = "service-key-0123456789"


def wait_until(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return bool(condition())
        time.sleep(0.05)
    return True


# --- a time budget on every engine call ---------------------------------------------------------------------


@pytest.fixture
def stalled(base_settings: Settings, embedder: Any, corpus_index: Any) -> Iterator[LiveServer]:
    """One worker, a 1-second budget, and an LLM that takes 8 s (its own timeout is longer)."""
    with FakeLLM() as llm:
        llm.behave(slow(8.0))
        settings = base_settings.model_copy(
            update={
                "llm_model": llm.litellm_model, "llm_api_base": llm.api_base, "llm_api_key": SecretStr("sk-test"),
                "llm_retries": 0, "llm_timeout": 30.0, "max_concurrent_requests": 1, "request_timeout_seconds": 1.0,
            }
        )
        engine = Engine(settings, embedder=embedder)
        engine.load()
        with LiveServer(create_app(settings, engine=engine)) as live:
            yield live


def test_a_call_over_its_budget_is_503_with_retry_after_and_frees_its_worker(stalled: LiveServer) -> None:
    worker = stalled.app.state.worker
    with httpx.Client(base_url=stalled.url, timeout=6) as client:
        error = assert_error(client.post("/ask", json={"question": QUESTION}), 503, "timeout")
        assert "time budget" in error["message"]
        shed = client.post("/ask", json={"question": QUESTION})
        assert shed.status_code == 503 and int(shed.headers["retry-after"]) >= 1
        # The only worker slot was given back: a search (no LLM) runs at once, while the abandoned calls still
        # wait for the LLM in their threads.
        assert client.post("/search", json={"query": "LoRA"}).status_code == 200
        assert worker.admitted >= 1  # abandoned work still counts against the queue...
        with client.stream("POST", "/ask", json={"question": QUESTION, "stream": True}) as response:
            events = read_sse(response)
    assert events[0][0] == "citations" and events[-1] == (
        "error", {"error": {"code": "timeout", "message": "the request took longer than its time budget; retry shortly"}}
    )
    assert wait_until(lambda: worker.admitted == 0, 60)  # ...until its thread has really ended


# --- slow and idle connections against `rag serve` ---------------------------------------------------------


@pytest.fixture(scope="module")
def served(
    base_settings: Settings, corpus_index: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    settings = base_settings.model_copy(update={"read_timeout_seconds": 2.0, "keep_alive_seconds": 1})
    with ServeProcess(settings, tmp_path_factory.mktemp("serve")) as server:
        yield server


def connect(server: ServeProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    sock.settimeout(15)  # a connection the server never closes fails the test here
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def test_a_slowloris_head_is_answered_408_and_closed(served: ServeProcess) -> None:
    """Twelve connections trickle a request head, a header line every half second, and never finish it."""
    sockets = [connect(served) for _ in range(12)]
    for sock in sockets:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    answers: dict[int, bytes] = {}
    for _ in range(40):  # up to 20 s of trickling, far past the 2 s read timeout
        for i, sock in enumerate(sockets):
            if i in answers:
                continue
            try:
                sock.sendall(b"X-Trickle: 1\r\n")
            except OSError:  # closed by the server
                answers[i] = b""
        time.sleep(0.5)
        for i, sock in enumerate(sockets):
            if i not in answers and _readable(sock):
                answers[i] = read_until_closed(sock)
        if len(answers) == len(sockets):
            break
    assert len(answers) == len(sockets)  # every one was closed by the server
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers.values() if answer), answers
    for sock in sockets:
        sock.close()
    assert httpx.get(f"{served.url}/healthz", timeout=10).status_code == 200


def _readable(sock: socket.socket) -> bool:
    """Data or end of stream is waiting (the server answered or closed)."""
    return bool(select.select([sock], [], [], 0)[0])


def test_silent_and_idle_connections_are_closed(served: ServeProcess) -> None:
    silent = connect(served)  # connects and sends nothing
    assert read_until_closed(silent) == b""
    idle = connect(served)  # one request, then keep-alive with nothing more
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_until_closed(idle).startswith(b"HTTP/1.1 200")
    silent.close()
    idle.close()


def test_a_trickled_body_is_answered_408(served: ServeProcess) -> None:
    sock = connect(served)
    body = b'{"question": "' + "梯度".encode() * 50 + b'"}'
    sock.sendall(
        b"POST /ask HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    for i in range(0, len(body), 4):
        try:
            sock.sendall(body[i : i + 4])
        except OSError:
            break
        time.sleep(0.25)  # the whole body would take ~10 s: past the 2 s deadline
    response = read_until_closed(sock)
    sock.close()
    assert response.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in response


@pytest.mark.parametrize("pieces", [1, 25])
def test_a_request_head_over_64_kib_is_refused(served: ServeProcess, pieces: int) -> None:
    """In one packet (the app sees the whole head) or in pieces (the server counts before the head ends)."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-Big-%d: %s\r\n" % (i, b"a" * 4000) for i in range(25))
    sock = connect(served)
    with contextlib.suppress(OSError):  # the server may close before all of it is sent
        size = -(-len(head) // pieces)
        for i in range(0, len(head), size):
            sock.sendall(head[i : i + size])
            time.sleep(0.02 if pieces > 1 else 0)
        sock.sendall(b"\r\n")
    response = read_until_closed(sock)
    sock.close()
    assert response.startswith(b"HTTP/1.1 431"), response[:200]


# --- the OpenAPI document and the service agree --------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed(base_settings: Settings, engine: Engine) -> Iterator[LiveServer]:
    settings = base_settings.model_copy(update={"api_key": SecretStr(KEY)})
    with LiveServer(create_app(settings, engine=engine)) as live:
        yield live


def test_docs_are_open_by_default_and_declare_the_bearer_scheme(keyed: LiveServer) -> None:
    with httpx.Client(base_url=keyed.url, timeout=30) as client:
        assert client.get("/docs").status_code == 200 and client.get("/redoc").status_code == 200
        doc = client.get("/openapi.json").json()
        assert_error(client.get("/stats"), 401, "unauthorized")
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "The API key (RAG_API_KEY)."
    }
    assert doc["paths"]["/ask"]["post"]["security"] == [{"bearerAuth": []}]
    assert "security" not in doc["paths"]["/healthz"]["get"]
    assert "securitySchemes" not in create_app(Settings(_env_file=None)).openapi().get("components", {})


def test_public_docs_false_puts_the_docs_behind_the_key(base_settings: Settings, engine: Engine) -> None:
    settings = base_settings.model_copy(update={"api_key": SecretStr(KEY), "public_docs": False})
    with LiveServer(create_app(settings, engine=engine)) as live, httpx.Client(base_url=live.url, timeout=30) as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert_error(client.get(path), 401, "unauthorized")
            assert client.get(path, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_the_schema_states_the_limits_the_service_enforces(base_settings: Settings) -> None:
    settings = base_settings.model_copy(update={"max_question_chars": 300, "max_history_turn_chars": 700})
    schemas = create_app(settings).openapi()["components"]["schemas"]
    question = schemas["AskRequest"]["properties"]["question"]
    assert question["minLength"] == 1 and question["pattern"] == NOT_BLANK_PATTERN and question["maxLength"] == 300
    assert schemas["SearchRequest"]["properties"]["query"]["maxLength"] == 300
    assert schemas["HistoryTurn"]["properties"]["content"]["maxLength"] == 700
    assert str(settings.max_history_chars) in schemas["AskRequest"]["properties"]["history"]["description"]
    assert {"maximum": 50, "minimum": 1, "type": "integer"} in schemas["AskRequest"]["properties"]["top_k"]["anyOf"]


def test_head_options_and_query_flags(keyed: LiveServer) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=keyed.url, timeout=60, headers=auth) as client:
        assert client.head("/healthz").status_code == 200 and client.head("/readyz").status_code == 200
        options = client.options("/documents")
        assert options.status_code == 204 and options.headers["allow"] == "GET, POST, OPTIONS"
        wrong = client.delete("/documents")
        assert_error(wrong, 405, "method_not_allowed")
        assert wrong.headers["allow"] == "GET, POST, OPTIONS"
        assert {"DELETE", "OPTIONS"} <= set(client.options("/feedback/1").headers["allow"].split(", "))
        files = {"file": ("flag.md", "# 标志\n\n严格的布尔参数。\n".encode())}
        error = assert_error(client.post("/documents", params={"overwrite": "yes"}, files=files), 422)
        assert "true or false" in error["message"]
        assert client.post("/ask", json={"question": QUESTION, "top_k": 3.0}).status_code == 200
        assert_error(client.post("/ask", json={"question": QUESTION, "top_k": 3.5}), 422)
        assert_error(client.post("/ask", json={"question": "   "}), 400, "invalid_input")  # the schema says so too
        assert_error(client.get("/no-such-endpoint"), 404, "not_found")


# --- typed errors inside -----------------------------------------------------------------------------------


def test_the_feedback_store_retries_a_busy_database_by_its_code_not_its_message(tmp_path: Path) -> None:
    store = SqliteFeedbackStore(tmp_path / "feedback.sqlite")
    calls = 0

    def missing_table(conn: sqlite3.Connection) -> None:
        nonlocal calls
        calls += 1
        conn.execute("SELECT * FROM locked_and_busy")  # "no such table: locked_and_busy": not a busy database

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        store._run(missing_table)
    assert calls == 1  # raised at once, not retried because its message happens to say "locked"
