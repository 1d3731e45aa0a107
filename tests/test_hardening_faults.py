"""Faults: ingests SIGKILLed while a server is serving, damaged index files, a full disk, a locked feedback DB.

tests/test_pipeline.py kills ingests at "embedding" and at every publish stage (store level); this file covers
the remaining pipeline stages (loading, chunking, writing) with a live API server over the same data dir.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hostile import SMALL_QUESTION, ServeProcess, small_corpus
from live import LiveServer, assert_error, wait_for_job

from ingest.pipeline import run_ingest
from rag.api import create_app
from rag.config import Settings
from rag.engine import Engine
from rag.errors import IngestFailed
from rag.index import CURRENT_FILE, TMP_PREFIX, IndexStore

ROOT = Path(__file__).resolve().parent.parent
NEW_NOTE = "量子退火笔记.md"
NEW_PHRASE = "量子退火机用它求解组合优化问题"
NEW_NOTE_TEXT = (
    "# 量子退火\n\n量子退火（Quantum Annealing）是一种利用量子隧穿效应寻找全局最优解的优化方法。\n"
    f"D-Wave 公司制造的{NEW_PHRASE}。\n"
)


def debris(settings: Settings) -> list[str]:
    """Leftovers of unfinished writes: temp version dirs and a CURRENT.tmp."""
    versions = settings.index_dir / "versions"
    found = [p.name for p in versions.iterdir() if p.name.startswith(TMP_PREFIX)] if versions.is_dir() else []
    if (settings.index_dir / f"{CURRENT_FILE}.tmp").exists():
        found.append(f"{CURRENT_FILE}.tmp")
    return found


def doc_ids(engine: Engine) -> set[str]:
    return {d["doc_id"] for d in engine.documents()}


def finds_new_note(client: httpx.Client) -> bool:
    hits = client.post("/search", json={"query": NEW_PHRASE, "mode": "bm25", "top_k": 5}).json()["hits"]
    return any(h["chunk"]["doc_id"] == NEW_NOTE for h in hits)


@pytest.fixture
def served(tmp_path: Path, make_settings: Callable[..., Settings], embedder: Any) -> tuple[Settings, Engine]:
    """A small corpus, ingested and loaded (version 1)."""
    settings = make_settings(corpus_dir=small_corpus(tmp_path / "corpus"))
    run_ingest(settings, embedder=embedder)
    engine = Engine(settings, embedder=embedder)
    engine.load()
    return settings, engine


# --- SIGKILL at the pipeline stages ------------------------------------------------------------------------

KILL = textwrap.dedent(
    """
    import os, signal, sys
    from ingest.pipeline import run_ingest
    from rag.config import Settings

    def on_stage(name):
        if name == sys.argv[1]:
            os.kill(os.getpid(), signal.SIGKILL)

    run_ingest(Settings(_env_file=None), on_stage=on_stage)
    print("the kill never happened")
    """
)


def ingest_killed_at(settings: Settings, stage: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env |= {"RAG_DATA_DIR": str(settings.data_dir), "RAG_CORPUS_DIR": str(settings.corpus_dir), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", KILL, stage], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr[-3000:])


@pytest.mark.parametrize("stage", ["loading", "chunking", "writing"])
def test_ingest_killed_at_a_pipeline_stage_while_serving(served: tuple[Settings, Engine], stage: str) -> None:
    settings, engine = served
    first = engine.version
    corpus = settings.corpus_dir
    # a rename needs no new vectors, so the killed interpreter never loads the embedder
    (corpus / "python-for-ai.md").rename(corpus / "python-renamed.md")
    with LiveServer(create_app(settings, engine=engine)) as live, live.client() as client:
        ingest_killed_at(settings, stage)

        assert IndexStore.from_settings(settings).current_version() == first
        assert engine.reload() is False  # nothing new was published
        assert client.get("/readyz").json() == {"status": "ready", "version": first}
        assert client.post("/ask", json={"question": SMALL_QUESTION}).json()["citations"]
        fresh = Engine(settings, embedder=engine.embedder)
        fresh.load()  # a restarted server finds the previous index too
        assert fresh.version == first and "python-for-ai.md" in doc_ids(fresh)

        job = wait_for_job(client, client.post("/ingest").json()["job_id"])  # the lock died with the killed run
        assert job["state"] == "succeeded" and job["reloaded"], job
        assert job["summary"]["added"] == ["python-renamed.md"] and job["summary"]["embedded"] == 0
        assert client.get("/readyz").json()["version"] == job["summary"]["version"] != first
        assert "python-renamed.md" in doc_ids(engine)
    assert debris(settings) == []
    assert len(IndexStore.from_settings(settings).list_versions()) <= 2


# --- damaged index files -------------------------------------------------------------------------------------


def truncate_vectors(version_dir: Path) -> None:
    path = version_dir / "vectors.faiss"
    path.write_bytes(path.read_bytes()[:-64])


def flip_chunk_store_byte(version_dir: Path) -> None:
    path = version_dir / "chunks.sqlite"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def edit_manifest_checksum(version_dir: Path) -> None:
    path = version_dir / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    digest = manifest["checksums"]["chunks.sqlite"]
    manifest["checksums"]["chunks.sqlite"] = ("0" if digest[0] != "0" else "1") + digest[1:]
    path.write_text(json.dumps(manifest), encoding="utf-8")


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated vector file": (truncate_vectors, "size mismatch in vectors.faiss"),
    "flipped byte in the chunk store": (flip_chunk_store_byte, "checksum mismatch in chunks.sqlite"),
    "manifest checksum mismatch": (edit_manifest_checksum, "checksum mismatch in chunks.sqlite"),
}


@pytest.mark.parametrize("damage", list(CORRUPTIONS))
def test_a_damaged_new_version_is_refused_and_the_old_one_keeps_serving(
    served: tuple[Settings, Engine], embedder: Any, damage: str
) -> None:
    settings, engine = served
    first = engine.version
    corrupt, message = CORRUPTIONS[damage]
    with LiveServer(create_app(settings, engine=engine)) as live, live.client() as client:
        (settings.corpus_dir / NEW_NOTE).write_text(NEW_NOTE_TEXT, encoding="utf-8")
        second = run_ingest(settings, embedder=embedder)  # e.g. `rag ingest` in another shell
        assert second.published
        corrupt(settings.index_dir / "versions" / str(second.version))

        assert engine.reload() is False
        assert engine.version == first and message in (engine.last_error or "")
        ready = client.get("/readyz").json()  # still serving, and saying why it is not the published version
        assert ready["status"] == "degraded" and ready["version"] == first and message in ready["reason"]
        stats = client.get("/stats").json()
        assert stats["version"] == first and message in stats["last_error"] and "rag ingest --full" in stats["last_error"]
        assert client.post("/ask", json={"question": SMALL_QUESTION}).status_code == 200
        assert not finds_new_note(client)  # nothing is served from the damaged version
        restarted = Engine(settings, embedder=embedder)  # and a restart falls back to the intact version too
        restarted.load()
        assert restarted.version == first and message in (restarted.degraded or "")

        job = wait_for_job(client, client.post("/ingest", json={"full": True}).json()["job_id"])
        assert job["state"] == "succeeded" and job["reloaded"], job
        assert client.get("/readyz").json()["version"] == job["summary"]["version"] not in (first, second.version)
        assert finds_new_note(client) and client.get("/stats").json()["last_error"] is None
    assert debris(settings) == []


@pytest.mark.parametrize("damage", list(CORRUPTIONS))
def test_a_server_started_on_a_damaged_index_is_not_ready_until_repaired(
    served: tuple[Settings, Engine], embedder: Any, damage: str
) -> None:
    settings, _ = served
    corrupt, message = CORRUPTIONS[damage]
    store = IndexStore.from_settings(settings)
    corrupt(settings.index_dir / "versions" / str(store.current_version()))

    with LiveServer(create_app(settings, engine=Engine(settings, embedder=embedder))) as live, live.client() as client:
        assert client.get("/healthz").status_code == 200
        error = assert_error(client.get("/readyz"), 503, "index_not_ready")
        assert message in error["message"] and "rag ingest --full" in error["message"]
        assert_error(client.post("/ask", json={"question": SMALL_QUESTION}), 503, "index_not_ready")
        assert_error(client.post("/search", json={"query": "过拟合"}), 503, "index_not_ready")

        summary = run_ingest(settings, full=True, embedder=embedder)  # `rag ingest --full`, out of band
        assert summary.published
        assert client.get("/readyz").json() == {"status": "ready", "version": summary.version}
        assert client.post("/ask", json={"question": SMALL_QUESTION}).json()["citations"]
    assert debris(settings) == []


def test_rag_ingest_full_on_the_command_line_repairs_what_a_running_rag_serve_refused(
    served: tuple[Settings, Engine], tmp_path: Path
) -> None:
    settings, _ = served
    store = IndexStore.from_settings(settings)
    flip_chunk_store_byte(settings.index_dir / "versions" / str(store.current_version()))
    with ServeProcess(settings, tmp_path / "serve") as server, httpx.Client(base_url=server.url, timeout=60) as client:
        error = assert_error(client.get("/readyz"), 503, "index_not_ready")
        assert "checksum mismatch in chunks.sqlite" in error["message"]

        env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
        env |= {"RAG_DATA_DIR": str(settings.data_dir), "RAG_CORPUS_DIR": str(settings.corpus_dir), "HF_HUB_OFFLINE": "1"}
        code = "import sys; from rag.cli import main; sys.argv[0] = 'rag'; main()"
        cli = subprocess.run(
            [sys.executable, "-c", code, "ingest", "--full", "--json"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
        )
        assert cli.returncode == 0, cli.stderr[-3000:]
        version = json.loads(cli.stdout.strip().splitlines()[-1])["version"]

        ready = client.get("/readyz")  # picked up without a restart
        assert ready.status_code == 200 and ready.json()["version"] == version
        assert client.post("/ask", json={"question": SMALL_QUESTION}).json()["citations"]
    assert debris(settings) == []


# --- a full disk -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["writing", "publish:tmp_created", "publish:files_written", "publish:manifest_written"])
def test_disk_full_during_ingest_is_a_clear_error_and_the_previous_index_stays(
    served: tuple[Settings, Engine], embedder: Any, stage: str
) -> None:
    settings, engine = served
    first = engine.version
    (settings.corpus_dir / NEW_NOTE).write_text(NEW_NOTE_TEXT, encoding="utf-8")

    def disk_full(name: str) -> None:
        if name == stage:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(IngestFailed) as failure:
        run_ingest(settings, embedder=embedder, on_stage=disk_full)
    assert "No space left on device" in failure.value.message and "previous index is intact" in failure.value.message
    assert IndexStore.from_settings(settings).current_version() == first
    assert debris(settings) == []  # a failed (not killed) write removes its own temp files
    assert engine.reload() is False and NEW_NOTE not in doc_ids(engine)
    fresh = Engine(settings, embedder=embedder)
    fresh.load()
    assert fresh.version == first

    retry = run_ingest(settings, embedder=embedder)  # space freed: the next run publishes
    assert retry.published and retry.added == [NEW_NOTE] and retry.embedded == 0  # its vectors were cached
    assert engine.reload() and NEW_NOTE in doc_ids(engine)


def test_disk_full_in_an_api_ingest_job_is_reported_on_the_job(served: tuple[Settings, Engine]) -> None:
    from rag.api.routes import get_jobs
    from rag.jobs import IngestJobs

    settings, engine = served
    first = engine.version
    (settings.corpus_dir / NEW_NOTE).write_text(NEW_NOTE_TEXT, encoding="utf-8")

    def disk_full(name: str) -> None:
        if name == "publish:files_written":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    app = create_app(settings, engine=engine)
    jobs = IngestJobs(settings, engine, on_stage=disk_full)
    app.dependency_overrides[get_jobs] = lambda: jobs
    with LiveServer(app) as live, live.client() as client:
        job = wait_for_job(client, client.post("/ingest").json()["job_id"])
        assert job["state"] == "failed" and job["error"]["code"] == "ingest_failed", job
        assert "No space left on device" in job["error"]["message"]
        assert client.get("/readyz").json()["version"] == first
        assert client.post("/ask", json={"question": SMALL_QUESTION}).status_code == 200
    assert debris(settings) == []


# --- feedback under contention ----------------------------------------------------------------------------------


def test_a_locked_feedback_database_is_waited_for_not_a_500(tmp_path: Path, base_settings: Settings, engine: Engine) -> None:
    settings = base_settings.model_copy(update={"data_dir": tmp_path / "data"})
    with LiveServer(create_app(settings, engine=engine)) as live, live.client() as client:
        assert client.post("/feedback", json={"rating": "up", "comment": "before"}).status_code == 201
        holder = sqlite3.connect(settings.data_dir / "feedback.sqlite", isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("INSERT INTO feedback (created_at, rating, comment) VALUES ('2020', 'down', 'holder')")
        released = threading.Event()

        def release_later() -> None:
            time.sleep(1.0)
            holder.execute("COMMIT")
            released.set()

        releaser = threading.Thread(target=release_later)
        releaser.start()
        try:
            responses = [client.post("/feedback", json={"rating": "down", "comment": f"during-{i}"}) for i in range(3)]
        finally:
            releaser.join(30)
            holder.close()
        assert released.is_set()
        assert [r.status_code for r in responses] == [201] * 3, [r.text for r in responses]
        comments = {e["comment"] for e in client.get("/feedback", params={"limit": 100}).json()["feedback"]}
        assert {"before", "holder", "during-0", "during-1", "during-2"} <= comments
