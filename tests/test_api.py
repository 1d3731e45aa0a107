"""The HTTP API over a real uvicorn server: every endpoint, SSE, auth, limits, uploads, feedback, ingest jobs."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ROOT, copy_corpus, copy_session_index
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from live import LiveServer, assert_error, raw_upload, read_sse, wait_for_job
from pydantic import SecretStr

from rag.api import create_app
from rag.api.routes import get_jobs
from rag.config import Settings
from rag.engine import Engine
from rag.jobs import IngestJobs

API_KEY = "test-key-7c1f"
ORIGIN = "http://ui.example"
QUESTION = "LoRA 微调里最重要的超参数是什么？"
NEW_NOTE = "量子退火笔记.md"
NEW_NOTE_TEXT = (
    "# 量子退火\n\n"
    "量子退火（Quantum Annealing）是一种利用量子隧穿效应在能量地形中寻找全局最优解的优化方法。\n"
    "D-Wave 公司制造的量子退火机用它求解组合优化问题。\n"
)


def dev_questions() -> list[dict]:
    lines = (ROOT / "eval" / "dev.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


# --- servers -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(base_settings: Settings, engine: Engine) -> Iterator[LiveServer]:
    """The API over the shared index, no key."""
    with LiveServer(create_app(base_settings, engine=engine)) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def auth_server(base_settings: Settings, engine: Engine) -> Iterator[LiveServer]:
    """The same index behind an API key, with CORS for one origin."""
    settings = base_settings.model_copy(update={"api_key": SecretStr(API_KEY), "cors_origins": [ORIGIN]})
    with LiveServer(create_app(settings, engine=engine)) as live:
        yield live


@pytest.fixture(scope="module")
def edge_server(
    base_settings: Settings, engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """Small body and upload limits, a private corpus for uploads, and a route that crashes."""
    corpus = tmp_path_factory.mktemp("edge") / "corpus"
    corpus.mkdir()
    settings = base_settings.model_copy(
        update={"max_body_bytes": 4096, "max_upload_mb": 0.01, "corpus_dir": corpus}
    )
    app = create_app(settings, engine=engine)

    async def boom() -> None:
        raise RuntimeError("secret note text that must not leak")

    app.add_api_route("/boom", boom, methods=["GET"])
    with LiveServer(app) as live:
        yield live


# --- health, readiness, metrics ----------------------------------------------------------------------


def test_health_and_readiness(client: httpx.Client, engine: Engine) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "version": engine.version}


def test_request_id_is_generated_or_echoed(client: httpx.Client) -> None:
    generated = client.get("/healthz").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert client.get("/healthz").headers["x-request-id"] != generated
    assert client.get("/healthz", headers={"X-Request-ID": "trace-42.a"}).headers["x-request-id"] == "trace-42.a"
    unsafe = client.get("/healthz", headers={"X-Request-ID": "bad id; drop"}).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", unsafe)
    assert client.get("/nowhere").headers["x-request-id"]


def test_metrics_count_requests_by_route_template(client: httpx.Client) -> None:
    client.get("/documents/does-not-exist.md")
    client.post("/search", json={"query": "LoRA"})
    text = client.get("/metrics").text
    assert 'rag_http_requests_total{method="GET",route="/documents/{doc_id:path}",status="404"}' in text
    assert re.search(r'rag_http_requests_total\{method="POST",route="/search",status="200"\} [1-9]', text)
    assert re.search(r'rag_http_request_duration_seconds_count\{method="POST",route="/search"\} [1-9]', text)
    assert "does-not-exist" not in text
    assert "rag_index_ready 1.0" in text
    assert "rag_ingest_duration_seconds" in text


# --- /ask --------------------------------------------------------------------------------------------


def test_ask_returns_the_answer_with_citations(client: httpx.Client) -> None:
    response = client.post("/ask", json={"question": QUESTION})
    assert response.status_code == 200
    answer = response.json()
    assert set(answer) >= {
        "question", "text", "citations", "refused", "backend", "answer_id", "resolved_question", "timings",
    }
    assert answer["question"] == QUESTION and not answer["refused"]
    assert answer["backend"] == "extractive" and re.fullmatch(r"[0-9a-f]{32}", answer["answer_id"])
    assert answer["citations"] and "[1]" in answer["text"]
    first = answer["citations"][0]
    assert first["number"] == 1 and first["doc_id"].endswith(".md") and first["end"] > first["start"]
    assert isinstance(first["heading_path"], list)


def test_ask_options_and_history(client: httpx.Client) -> None:
    answer = client.post(
        "/ask", json={"question": QUESTION, "top_k": 1, "mode": "bm25", "explain": True}
    ).json()
    assert len(answer["citations"]) <= 1 and answer["explanation"]
    followup = client.post(
        "/ask",
        json={
            "question": "它最重要的超参数是什么？",
            "history": [{"role": "user", "content": "LoRA 是什么？"}, {"role": "assistant", "content": "一种微调方法。"}],
        },
    )
    assert followup.status_code == 200
    assert followup.json()["resolved_question"] != "它最重要的超参数是什么？"
    assert_error(client.post("/ask", json={"question": QUESTION, "history": [{"role": "bot", "content": "x"}]}), 422)


def test_ask_streams_server_sent_events(client: httpx.Client) -> None:
    with client.stream("POST", "/ask", json={"question": QUESTION, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = read_sse(response)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "citations" and kinds[-1] == "done"
    assert set(kinds[1:-1]) == {"token"} and len(kinds) >= 3
    citations, done = events[0][1], events[-1][1]
    assert citations and citations[0]["number"] == 1
    assert "".join(data["text"] for kind, data in events if kind == "token") == done["text"]
    assert done["question"] == QUESTION and done["answer_id"] and done["citations"]


def test_ask_streams_when_the_client_accepts_event_stream(client: httpx.Client) -> None:
    headers = {"Accept": "text/event-stream"}
    with client.stream("POST", "/ask", json={"question": QUESTION}, headers=headers) as response:
        kinds = [kind for kind, _ in read_sse(response)]
    assert kinds[0] == "citations" and kinds[-1] == "done"


def test_stream_errors_before_output_are_plain_json(client: httpx.Client) -> None:
    assert_error(client.post("/ask", json={"question": "  ", "stream": True}), 400, "invalid_input")


def test_client_disconnect_mid_stream_leaves_the_server_healthy(client: httpx.Client) -> None:
    with client.stream("POST", "/ask", json={"question": QUESTION, "stream": True}) as response:
        first = next(response.iter_lines())
        assert first == "event: citations"
    assert client.get("/healthz").status_code == 200
    assert client.post("/ask", json={"question": QUESTION}).status_code == 200


def test_sixteen_concurrent_asks_all_succeed(server: LiveServer) -> None:
    questions = [q["question"] for q in dev_questions()[:16]]

    def ask(question: str) -> int:
        with server.client() as c:
            return c.post("/ask", json={"question": question}).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = [pool.submit(ask, q) for q in questions]
        with server.client() as c:  # the event loop still answers while the engine works
            assert c.get("/healthz").status_code == 200
        statuses = [f.result() for f in futures]
    assert statuses == [200] * 16


def test_ask_latency_over_http(client: httpx.Client) -> None:
    """p50/p95 of /ask (extractive) on the dev questions, printed for the report."""
    latencies: list[float] = []
    for q in dev_questions():
        started = time.perf_counter()
        response = client.post("/ask", json={"question": q["question"]})
        latencies.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    latencies.sort()
    p50 = statistics.median(latencies)
    p95 = latencies[max(0, round(0.95 * len(latencies)) - 1)]
    print(f"\n/ask over HTTP, {len(latencies)} dev questions: p50 {p50:.0f} ms, p95 {p95:.0f} ms")


# --- /search, knowledge base -----------------------------------------------------------------------


def test_search_ranks_passages_with_the_gate(client: httpx.Client) -> None:
    result = client.post("/search", json={"query": "LoRA 的秩", "top_k": 3}).json()
    assert result["query"] == "LoRA 的秩" and result["mode"] == "hybrid"
    assert 1 <= len(result["hits"]) <= 3 and [h["rank"] for h in result["hits"]] == list(
        range(1, len(result["hits"]) + 1)
    )
    assert {"answerable", "score", "threshold", "features", "reason"} <= set(result["gate"])
    assert result["hits"][0]["chunk"]["doc_id"].endswith(".md") and "explanation" not in result
    explained = client.post("/search", json={"query": "LoRA", "explain": True}).json()
    assert explained["explanation"]
    for mode in ("bm25", "dense"):
        assert client.post("/search", json={"query": "LoRA", "mode": mode}).json()["mode"] == mode
    assert_error(client.post("/search", json={"query": "LoRA", "mode": "fuzzy"}), 422, "validation_error")


def test_documents_glossary_stats(client: httpx.Client) -> None:
    documents = client.get("/documents").json()["documents"]
    ids = {d["doc_id"] for d in documents}
    assert ids == {p.name for p in (ROOT / "corpus").glob("*.md")}
    doc = client.get("/documents/learning-notes.md").json()
    assert doc["doc_id"] == "learning-notes.md" and doc["text"] and doc["chunks"]
    assert all(0 <= c["start"] < c["end"] <= len(doc["text"]) for c in doc["chunks"])
    assert_error(client.get("/documents/sub/unknown.md"), 404, "not_found")
    groups = client.get("/glossary").json()["groups"]
    assert groups and all(isinstance(g, list) and len(g) >= 2 for g in groups)
    stats = client.get("/stats").json()
    assert stats["ready"] and stats["documents"] == len(ids) and stats["chunks"] > 0


# --- errors and limits ------------------------------------------------------------------------------


def test_errors_share_one_shape(client: httpx.Client, base_settings: Settings) -> None:
    headers = {"Content-Type": "application/json"}
    assert_error(client.post("/ask", content=b'{"question": ', headers=headers), 400, "malformed_json")
    assert_error(client.post("/ask", content=b"", headers=headers), 400)
    assert_error(client.post("/ask", json={"question": ""}), 400, "invalid_input")
    assert_error(client.post("/ask", json={"question": "\x1c\x85"}), 400, "invalid_input")  # blank to str.strip()
    too_long = "问" * (base_settings.max_question_chars + 1)
    assert_error(client.post("/ask", json={"question": too_long}), 400, "invalid_input")
    # the limit counts the question as sent (the schema's maxLength): blanks around it are not free
    padded = " " + "问" * base_settings.max_question_chars
    assert_error(client.post("/ask", json={"question": padded}), 400, "invalid_input")
    assert_error(client.post("/ask", json={"question": QUESTION, "top_k": 0}), 422, "validation_error")
    assert_error(client.post("/ask", json={"question": QUESTION, "top_k": 51}), 422, "validation_error")
    assert_error(client.post("/ask", json={"top_k": 3}), 422, "validation_error")
    assert_error(client.get("/no/such/route"), 404, "not_found")
    assert_error(client.get("/ask"), 405, "method_not_allowed")


def test_body_over_the_limit_is_413(edge_server: LiveServer) -> None:
    with edge_server.client() as c:
        big = {"question": "问" * 3000}
        assert_error(c.post("/ask", json=big), 413, "payload_too_large")

        def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count the bytes
            yield b'{"question": "'
            for _ in range(10):
                yield "问".encode() * 300
            yield b'"}'

        assert_error(c.post("/ask", content=chunks(), headers={"Content-Type": "application/json"}), 413)
        assert c.post("/ask", json={"question": QUESTION}).status_code == 200


def test_unexpected_errors_are_500_without_details(edge_server: LiveServer) -> None:
    with edge_server.client() as c:
        response = c.get("/boom")
    error = assert_error(response, 500, "internal_error")
    assert "secret" not in response.text and "RuntimeError" not in response.text
    assert error["message"] == "internal server error"


# --- uploads ----------------------------------------------------------------------------------------


def test_upload_writes_a_note_atomically(edge_server: LiveServer) -> None:
    corpus = Path(edge_server.app.state.settings.corpus_dir)
    with edge_server.client() as c:
        response = c.post("/documents", files={"file": (NEW_NOTE, NEW_NOTE_TEXT.encode(), "text/markdown")})
        assert response.status_code == 201, response.text
        assert response.json() == {
            "doc_id": NEW_NOTE, "bytes": len(NEW_NOTE_TEXT.encode()), "encoding": "utf-8", "replaced": False,
            "format": "markdown",
        }
        assert (corpus / NEW_NOTE).read_bytes() == NEW_NOTE_TEXT.encode()

        assert_error(c.post("/documents", files={"file": (NEW_NOTE, b"# other\n")}), 409, "already_exists")
        assert (corpus / NEW_NOTE).read_bytes() == NEW_NOTE_TEXT.encode()
        replaced = c.post("/documents", params={"overwrite": "true"}, files={"file": (NEW_NOTE, b"# v2\n\ntext\n")})
        assert replaced.status_code == 201 and replaced.json()["replaced"] is True
        assert (corpus / NEW_NOTE).read_bytes() == b"# v2\n\ntext\n"

        gbk = "# 笔记\n\n梯度下降是一种优化算法。\n".encode("gb18030")
        response = c.post("/documents", files={"file": ("gbk-note.txt", gbk)})
        assert response.status_code == 201 and response.json()["encoding"] == "gb18030"
    assert not [p for p in corpus.iterdir() if p.name.startswith(".upload-")]


@pytest.mark.parametrize(
    "filename",
    [
        b"../escape.md",
        b"/etc/absolute.md",
        b"sub\\\\inner.md",
        b"sub\\inner.md",
        b"C:\\\\notes\\\\windows.md",
        b"line\nbreak.md",
        b"ctrl\x01char.md",
        b"x" * 118 + b".md",
        b"",
        b"   ",
        b".hidden.md",
        b"notes.pdf",
        b"noext",
    ],
)
def test_upload_rejects_unsafe_names(edge_server: LiveServer, filename: bytes) -> None:
    corpus = Path(edge_server.app.state.settings.corpus_dir)
    before = sorted(p.name for p in corpus.iterdir())
    with edge_server.client() as c:
        response = raw_upload(c, filename, b"# title\n\nbody\n")
    assert response.status_code in (400, 422), response.text
    assert_error(response, response.status_code)
    assert sorted(p.name for p in corpus.iterdir()) == before
    assert not (corpus.parent / "escape.md").exists()


def test_upload_rejects_bad_content_and_size(edge_server: LiveServer) -> None:
    with edge_server.client() as c:
        assert_error(c.post("/documents", files={"file": ("bin.md", b"\x00\x01\x02binary")}), 400, "invalid_input")
        # undecodable: not UTF-8, no BOM, no plausible GB18030 (b"\xff\xfe..." would be UTF-16 with a BOM, which ingest reads)
        assert_error(c.post("/documents", files={"file": ("bad.md", "caf\xe9 \xe0 la cr\xe8me".encode("latin-1"))}), 400)
        assert_error(c.post("/documents", files={"file": ("empty.md", b"")}), 400)
        over = b"a" * 12_000  # over max_upload_mb (0.01 MB) but within the multipart allowance
        assert_error(c.post("/documents", files={"file": ("big.md", over)}), 413, "payload_too_large")
        huge = b"a" * 40_000  # over the whole request limit for uploads
        assert_error(c.post("/documents", files={"file": ("huge.md", huge)}), 413, "payload_too_large")
        assert_error(c.post("/documents", data={"note": "no file"}), 422, "validation_error")


# --- feedback -------------------------------------------------------------------------------------------


def test_feedback_is_stored_listed_and_deleted(client: httpx.Client) -> None:
    answer = client.post("/ask", json={"question": QUESTION}).json()
    up = client.post("/feedback", json={"answer_id": answer["answer_id"], "question": QUESTION, "rating": "up"})
    assert up.status_code == 201
    stored = up.json()
    assert stored["rating"] == "up" and stored["answer_id"] == answer["answer_id"] and stored["id"] > 0
    down = client.post("/feedback", json={"question": QUESTION, "rating": -1, "comment": "漏了关键点"}).json()
    assert down["rating"] == "down" and down["comment"] == "漏了关键点"
    assert client.post("/feedback", json={"rating": 1}).json()["rating"] == "up"
    assert_error(client.post("/feedback", json={"rating": "meh"}), 422, "validation_error")
    assert_error(client.post("/feedback", json={"rating": 2}), 422)

    listed = client.get("/feedback").json()["feedback"]
    ids = [e["id"] for e in listed]
    assert ids == sorted(ids, reverse=True) and ids[1] == down["id"] and stored["id"] in ids
    assert client.delete(f"/feedback/{down['id']}").status_code == 204
    assert down["id"] not in [e["id"] for e in client.get("/feedback").json()["feedback"]]
    assert_error(client.delete(f"/feedback/{down['id']}"), 404, "not_found")


def test_fifty_concurrent_feedback_writes_are_all_stored(server: LiveServer) -> None:
    marker = f"burst-{time.time_ns()}"

    def send(i: int) -> int:
        with server.client() as c:
            rating = "up" if i % 2 else "down"
            return c.post("/feedback", json={"rating": rating, "comment": f"{marker}-{i}"}).status_code

    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(send, range(50)))
    assert statuses == [201] * 50
    with server.client() as c:
        entries = c.get("/feedback", params={"limit": 1000}).json()["feedback"]
    comments = {e["comment"] for e in entries if (e["comment"] or "").startswith(marker)}
    assert comments == {f"{marker}-{i}" for i in range(50)}


# --- auth and CORS ------------------------------------------------------------------------------------


def _route_calls(app: FastAPI) -> Iterator[tuple[str, str, str]]:
    """(method, template, concrete path) for every route of the app, included routers flattened."""
    for route in iter_route_contexts(app.routes):
        assert route.path is not None
        methods = set(route.methods or {"GET"}) - {"HEAD", "OPTIONS"}
        path = re.sub(r"\{[^}]+\}", "1", route.path)
        for method in sorted(methods):
            yield method, route.path, path


PUBLIC = {"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}


def test_every_route_but_health_requires_the_key(auth_server: LiveServer) -> None:
    calls = list(_route_calls(auth_server.app))
    assert {"/ask", "/ingest", "/documents", "/feedback/{entry_id}", "/v1/chat/completions"} <= {p for _, p, _ in calls}
    open_paths = set()
    with auth_server.client() as c:
        for method, template, path in calls:
            response = c.request(method, path)
            if response.status_code != 401:
                open_paths.add(template)
            else:
                assert_error(response, 401, "unauthorized")
                assert response.headers["www-authenticate"] == "Bearer"
            wrong = c.request(method, path, headers={"Authorization": "Bearer wrong-key"})
            assert wrong.status_code == (200 if template in PUBLIC else 401)
    assert open_paths == PUBLIC  # the probes, and the API docs (RAG_PUBLIC_DOCS, on by default)


def test_the_right_key_opens_every_endpoint(auth_server: LiveServer) -> None:
    with auth_server.client(headers={"Authorization": f"Bearer {API_KEY}"}) as c:
        assert c.get("/stats").status_code == 200
        assert c.post("/ask", json={"question": QUESTION}).status_code == 200
        assert c.get("/documents").status_code == 200
        assert c.get("/metrics").status_code == 200
        assert_error(c.get("/ingest/unknown-job"), 404, "not_found")
    with auth_server.client(headers={"Authorization": f"Basic {API_KEY}"}) as c:
        assert c.get("/stats").status_code == 401


def test_cors_for_the_configured_origin(auth_server: LiveServer) -> None:
    with auth_server.client() as c:
        preflight = c.options(
            "/ask",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization,content-type"},
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        denied = c.get("/stats", headers={"Origin": ORIGIN})
        assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == ORIGIN
        other = c.get("/healthz", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_no_key_means_open(client: httpx.Client) -> None:
    assert client.get("/stats").status_code == 200
    assert client.get("/feedback").status_code == 200


# --- no index, ingest jobs, hot swap -----------------------------------------------------------------


def test_without_an_index_the_app_starts_and_an_ingest_job_makes_it_ready(
    make_settings: Callable[..., Settings], embedder: Any
) -> None:
    settings = make_settings()
    with LiveServer(create_app(settings, engine=Engine(settings, embedder=embedder))) as live, live.client() as c:
        assert c.get("/healthz").status_code == 200
        assert "rag ingest" in assert_error(c.get("/readyz"), 503, "index_not_ready")["message"]
        assert "rag ingest" in assert_error(c.post("/ask", json={"question": QUESTION}), 503)["message"]
        assert_error(c.post("/search", json={"query": "LoRA"}), 503, "index_not_ready")
        assert_error(c.post("/ask", json={"question": QUESTION, "stream": True}), 503, "index_not_ready")
        assert c.get("/stats").json()["ready"] is False
        assert "rag_index_ready 0.0" in c.get("/metrics").text

        started = c.post("/ingest", json={})
        assert started.status_code == 202 and started.json()["state"] in ("queued", "running")
        job = wait_for_job(c, started.json()["job_id"])
        assert job["state"] == "succeeded", job
        assert job["reloaded"] and job["summary"]["published"] and job["summary"]["documents"] == 5
        assert job["progress"]["files"]["done"] == 5
        assert c.get("/readyz").status_code == 200
        assert c.post("/ask", json={"question": QUESTION}).json()["citations"]
        assert re.search(r'rag_ingest_duration_seconds_count\{outcome="succeeded"\} 1\.0', c.get("/metrics").text)


def test_ingest_during_a_burst_of_asks_swaps_the_index_without_failures(
    tmp_path: Path, make_settings: Callable[..., Settings], embedder: Any, base_settings: Settings
) -> None:
    corpus = copy_corpus(tmp_path / "corpus")
    settings = make_settings(corpus_dir=corpus)
    copy_session_index(base_settings, settings)  # what ingesting the copy would publish
    engine = Engine(settings, embedder=embedder)
    app = create_app(settings, engine=engine)
    entered, release = threading.Event(), threading.Event()

    def hold_embedding(stage: str) -> None:  # the pipeline's stage hook: keep the job running until released
        if stage == "embedding":
            entered.set()
            release.wait(300)

    jobs = IngestJobs(settings, engine, on_stage=hold_embedding)
    app.dependency_overrides[get_jobs] = lambda: jobs
    questions = [q["question"] for q in dev_questions()]
    statuses: list[int] = []
    stop = threading.Event()

    def burst(offset: int) -> None:
        with httpx.Client(base_url=live.url, timeout=120) as c:
            i = offset
            while not stop.is_set():
                statuses.append(c.post("/ask", json={"question": questions[i % len(questions)]}).status_code)
                i += 1

    with LiveServer(app) as live, live.client() as c:
        old_version = c.get("/stats").json()["version"]
        upload = c.post("/documents", files={"file": (NEW_NOTE, NEW_NOTE_TEXT.encode(), "text/markdown")})
        assert upload.status_code == 201
        before = c.post("/search", json={"query": "量子退火是什么", "top_k": 3}).json()
        assert NEW_NOTE not in [h["chunk"]["doc_id"] for h in before["hits"]]

        job_id = c.post("/ingest").json()["job_id"]
        assert entered.wait(300)
        assert_error(c.post("/ingest", json={"full": True}), 409, "ingest_busy")
        running = c.get(f"/ingest/{job_id}").json()
        assert running["state"] == "running" and running["progress"]["files"] == {"done": 6, "total": 6}

        workers = [threading.Thread(target=burst, args=(k * 7,)) for k in range(4)]
        for w in workers:
            w.start()
        while len(statuses) < 12:
            time.sleep(0.05)
        release.set()
        job = wait_for_job(c, job_id)
        seen = len(statuses)
        while len(statuses) < seen + 12:
            time.sleep(0.05)
        stop.set()
        for w in workers:
            w.join()

        assert job["state"] == "succeeded", job
        assert job["summary"]["added"] == [NEW_NOTE] and job["reloaded"] is True
        assert len(statuses) >= 24 and statuses.count(200) == len(statuses)
        stats = c.get("/stats").json()
        assert stats["version"] != old_version and stats["documents"] == 6
        after = c.post("/search", json={"query": "量子退火是什么", "top_k": 3}).json()
        assert after["hits"][0]["chunk"]["doc_id"] == NEW_NOTE
        assert c.post("/ingest").status_code == 202  # the slot is free again
    release.set()
    jobs.wait(300)


def test_an_index_published_by_a_separate_rag_ingest_is_swapped_in(
    tmp_path: Path, make_settings: Callable[..., Settings], embedder: Any, base_settings: Settings
) -> None:
    corpus = copy_corpus(tmp_path / "corpus")
    settings = make_settings(corpus_dir=corpus, index_poll_seconds=0.2)
    copy_session_index(base_settings, settings)  # what ingesting the copy would publish
    with (
        LiveServer(create_app(settings, engine=Engine(settings, embedder=embedder))) as live,
        live.client() as c,
    ):
        old_version = c.get("/stats").json()["version"]
        assert NEW_NOTE not in [d["doc_id"] for d in c.get("/documents").json()["documents"]]
        (corpus / NEW_NOTE).write_text(NEW_NOTE_TEXT, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
        env |= {"RAG_DATA_DIR": str(settings.data_dir), "RAG_CORPUS_DIR": str(corpus), "HF_HUB_OFFLINE": "1"}
        rag = Path(sys.executable).with_name("rag")
        proc = subprocess.run(
            [str(rag), "ingest", "--json"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stderr
        new_version = json.loads(proc.stdout.strip().splitlines()[-1])["version"]
        assert new_version != old_version

        deadline = time.monotonic() + 60
        while c.get("/stats").json()["version"] != new_version:
            assert time.monotonic() < deadline, "the server never picked up the new index"
            time.sleep(0.1)
        answer = c.post("/ask", json={"question": "量子退火是什么？"}).json()
        assert not answer["refused"] and any(cite["doc_id"] == NEW_NOTE for cite in answer["citations"])


def test_job_routes_report_unknown_ids(client: httpx.Client) -> None:
    assert_error(client.get("/ingest/not-a-job"), 404, "not_found")


def test_openapi_lists_every_endpoint(client: httpx.Client, server: LiveServer) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    expected = {
        re.sub(r":\w+}", "}", r.path or "")  # OpenAPI writes {doc_id:path} as {doc_id}
        for r in iter_route_contexts(server.app.routes)
        if isinstance(r.original_route, APIRoute)
    }
    assert len(expected) == 23 and expected <= set(paths)  # 15 + /documents/{id}/original + 5 /conversations + 2 /kbs


def test_the_documented_not_blank_pattern_is_exactly_what_the_service_strips(client: httpx.Client) -> None:
    """The OpenAPI pattern of questions must mean the same in JSON Schema's regex dialect as in Python's: a fuzzer
    sent "\x1c" (not whitespace to ECMA-262, whitespace to str.strip()) and got 400 for schema-valid data."""
    pattern = client.get("/openapi.json").json()["components"]["schemas"]["AskRequest"]["properties"]["question"]["pattern"]
    compiled = re.compile(pattern)
    for code in range(0x10000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        char = chr(code)
        assert bool(compiled.search(char)) == bool(char.strip()), hex(code)
    # the characters where the dialects' \s differ are named explicitly, so ECMA-262 reads the same set
    for named in (r"\x1c-\x1f", r"\x85", r"\ufeff"):
        assert named in pattern
