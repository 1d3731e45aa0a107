"""Index hardening (issue 18): a damaged current version falls back to the newest intact one, one repair hint,
the ingest fingerprint, merged passages, the reranker setting, the embedder lock, reference-counted snapshots,
and chunking that keeps a note's earlier chunks when a markdown section is added to it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import httpx
import pytest
from conftest import CORPUS, ROOT
from hostile import SMALL_QUESTION, free_port, settings_env, small_corpus
from live import LiveServer, assert_error

from ingest.chunking import chunk_document
from ingest.pipeline import run_ingest
from rag.api import create_app
from rag.chunk_merging import merge_adjacent
from rag.config import Settings
from rag.engine import Engine
from rag.errors import REPAIR_HINT, IndexNotReady, ModelUnavailable
from rag.index import IndexStore
from rag.types import Chunk, Document, Hit

NEW_NOTE = "量子退火笔记.md"
NEW_PHRASE = "量子退火机用它求解组合优化问题"
NEW_NOTE_TEXT = f"# 量子退火\n\n量子退火是一种利用量子隧穿效应寻找全局最优解的优化方法。\nD-Wave 公司制造的{NEW_PHRASE}。\n"
WEBPAGE = "ai-basics-webpage.md"


def finds_new_note(client: httpx.Client) -> bool:
    hits = client.post("/search", json={"query": NEW_PHRASE, "mode": "bm25", "top_k": 5}).json()["hits"]
    return any(h["chunk"]["doc_id"] == NEW_NOTE for h in hits)


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def manifest_of(settings: Settings) -> dict:
    store = IndexStore.from_settings(settings)
    return json.loads((store.versions_dir / str(store.current_version()) / "manifest.json").read_text("utf-8"))


@pytest.fixture
def served(tmp_path: Path, make_settings: Callable[..., Settings], embedder: Any) -> tuple[Settings, Engine]:
    """A small corpus, ingested and loaded (version 1); no index poll, so tests decide when to look."""
    settings = make_settings(corpus_dir=small_corpus(tmp_path / "corpus"), index_poll_seconds=0)
    run_ingest(settings, embedder=embedder)
    engine = Engine(settings, embedder=embedder)
    engine.load()
    return settings, engine


# --- a damaged current version: fall back, say so, keep the fallback until a good ingest ---------------------


def test_a_restarted_server_serves_the_intact_previous_version_and_says_it_is_degraded(
    served: tuple[Settings, Engine], embedder: Any
) -> None:
    settings, engine = served
    first = engine.version
    (settings.corpus_dir / NEW_NOTE).write_text(NEW_NOTE_TEXT, encoding="utf-8")
    second = run_ingest(settings, embedder=embedder)
    assert second.published
    store = IndexStore.from_settings(settings)
    flip_byte(store.versions_dir / str(second.version) / "vectors.faiss")

    restarted = Engine(settings, embedder=embedder)
    with LiveServer(create_app(settings, engine=restarted)) as live, live.client() as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["status"] == "degraded" and body["version"] == first, body
        assert str(second.version) in body["reason"] and "checksum mismatch in vectors.faiss" in body["reason"]
        assert REPAIR_HINT in body["reason"]
        answer = client.post("/ask", json={"question": SMALL_QUESTION})
        assert answer.status_code == 200 and answer.json()["citations"], answer.text
        assert not finds_new_note(client)  # nothing comes from the damaged version
        stats = client.get("/stats").json()
        assert stats["version"] == first and stats["degraded"] == body["reason"]
        restarted.load_if_published()  # the index poll: the damaged version is refused again, not served
        assert client.get("/readyz").json()["status"] == "degraded"

        third = run_ingest(settings, embedder=embedder)  # the next good ingest (`rag ingest` in another shell)
        assert third.published
        # its GC keeps the version this server is serving and drops the damaged one
        assert set(store.list_versions()) == {first, third.version}
        assert restarted.load_if_published()
        assert client.get("/readyz").json() == {"status": "ready", "version": third.version}
        assert finds_new_note(client)
        assert client.get("/stats").json()["degraded"] is None


def test_every_not_ready_message_names_the_same_repair_command(
    tmp_path: Path, make_settings: Callable[..., Settings], embedder: Any
) -> None:
    settings = make_settings(corpus_dir=small_corpus(tmp_path / "corpus"), index_poll_seconds=0)

    def messages(client: httpx.Client) -> list[str]:
        responses = [
            client.get("/readyz"),
            client.post("/ask", json={"question": SMALL_QUESTION}),
            client.post("/search", json={"query": "过拟合"}),
            client.get("/documents"),
        ]
        return [assert_error(r, 503)["message"] for r in responses]

    with LiveServer(create_app(settings, engine=Engine(settings, embedder=embedder))) as live, live.client() as client:
        no_index = messages(client)
    run_ingest(settings, embedder=embedder)
    store = IndexStore.from_settings(settings)
    flip_byte(store.versions_dir / str(store.current_version()) / "vectors.faiss")  # and no older version
    with LiveServer(create_app(settings, engine=Engine(settings, embedder=embedder))) as live, live.client() as client:
        damaged = messages(client)
    assert all(message.endswith(REPAIR_HINT) for message in no_index + damaged), no_index + damaged
    assert all("checksum mismatch in vectors.faiss" in message for message in damaged), damaged


# --- the ingest fingerprint and the skipped list --------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({"vector_index": "flat"}, {"vector_index": "hnsw"}),
        ({"keyword_backend": "rank_bm25"}, {"keyword_backend": "bm25s"}),
        ({"vector_index": "hnsw", "hnsw_m": 32}, {"vector_index": "hnsw", "hnsw_m": 8}),
    ],
)
def test_an_index_setting_change_rebuilds_without_a_note_change(
    tmp_path: Path, make_settings: Callable[..., Settings], embedder: Any, before: dict, after: dict
) -> None:
    settings = make_settings(corpus_dir=small_corpus(tmp_path / "corpus"), **before)
    assert run_ingest(settings, embedder=embedder).published
    changed = settings.model_copy(update=after)
    summary = run_ingest(changed, embedder=embedder)
    assert summary.published and summary.embedded == 0  # rebuilt from the embedding cache
    manifest = manifest_of(changed)
    assert manifest["vector_index"] == after.get("vector_index", "flat" if "keyword_backend" in after else "hnsw")
    assert manifest["keyword_backend"] == after.get("keyword_backend", manifest["keyword_backend"])
    if "hnsw_m" in after:
        path = IndexStore.from_settings(changed).versions_dir / str(summary.version) / "vectors.faiss"
        assert faiss.read_index(str(path)).hnsw.nb_neighbors(1) == after["hnsw_m"]
    assert not run_ingest(changed, embedder=embedder).published  # and then nothing changed


def test_the_manifest_skipped_list_follows_the_corpus_when_no_note_changed(
    tmp_path: Path, make_settings: Callable[..., Settings], embedder: Any
) -> None:
    corpus = small_corpus(tmp_path / "corpus")
    settings = make_settings(corpus_dir=corpus)
    assert run_ingest(settings, embedder=embedder).published
    assert manifest_of(settings)["skipped"] == []

    (corpus / "empty.md").write_bytes(b"")
    summary = run_ingest(settings, embedder=embedder)
    assert [s.path for s in summary.skipped] == ["empty.md"]
    assert summary.published and [s["path"] for s in manifest_of(settings)["skipped"]] == ["empty.md"]
    assert not run_ingest(settings, embedder=embedder).published  # the same skipped file again: no change

    (corpus / "empty.md").unlink()
    assert run_ingest(settings, embedder=embedder).published
    assert manifest_of(settings)["skipped"] == []


# --- merging adjacent chunks ------------------------------------------------------------------------------------


def merged_pair(text: str) -> tuple[Hit, Chunk, Chunk]:
    """The first two neighbouring chunks of `text` (chunked without overlap), retrieved together and merged."""
    doc = Document(doc_id="n.md", title="n", text=text, sha256="0" * 64, encoding="utf-8")
    chunks = chunk_document(doc, chunk_size=40, overlap=0)
    first, second = next((a, b) for a, b in zip(chunks, chunks[1:], strict=False) if a.end >= b.start)
    hits = [Hit(first, 0.9, 1, chunk_ids=(first.chunk_id,)), Hit(second, 0.8, 2, chunk_ids=(second.chunk_id,))]
    merged = merge_adjacent(hits)
    assert len(merged) == 1, "the two neighbours were not merged"
    return merged[0], first, second


def test_merging_chunks_without_a_heading_keeps_the_first_line_of_the_second() -> None:
    text = "检索\n\n" + "".join(f"第{i}段甲句。第{i}段乙句。第{i}段丙句。\n" for i in range(8))
    merged, first, second = merged_pair(text)
    assert first.heading_path == second.heading_path == ()
    assert merged.chunk.index_text == first.index_text + "\n" + second.index_text
    sentences = [s for s in re.split(r"[。\n]", text[first.start : second.end]) if s]
    assert all(s in merged.chunk.index_text for s in sentences)  # the boundary sentence is not lost


def test_merging_chunks_with_a_heading_keeps_the_heading_once() -> None:
    text = "# 检索\n\n" + "".join(f"第{i}段甲句。第{i}段乙句。第{i}段丙句。\n" for i in range(8))
    merged, first, second = merged_pair(text)
    assert first.heading_path == second.heading_path == ("检索",)
    assert merged.chunk.index_text == first.index_text + "\n" + second.index_text.removeprefix("检索\n")
    sentences = [s for s in re.split(r"[。\n]", text[first.start : second.end]) if s]
    assert all(s.lstrip("# ") in merged.chunk.index_text for s in sentences)


# --- the reranker setting ------------------------------------------------------------------------------------------


def test_a_bad_rerank_model_is_a_clear_error_naming_the_setting(served: tuple[Settings, Engine], embedder: Any) -> None:
    settings, _ = served
    missing = str(settings.data_dir / "no-such-cross-encoder")
    engine = Engine(settings.model_copy(update={"rerank_model": missing}), embedder=embedder)
    with pytest.raises(ModelUnavailable, match="RAG_RERANK_MODEL") as caught:
        engine.load()
    assert missing in caught.value.message


def test_rag_serve_with_a_bad_rerank_model_stops_with_one_clear_line(served: tuple[Settings, Engine]) -> None:
    settings, _ = served
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env |= settings_env(settings) | {"RAG_RERANK_MODEL": str(settings.data_dir / "no-such-cross-encoder")}
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    code = "import sys; from rag.cli import main; sys.argv[0] = 'rag'; main()"
    proc = subprocess.run(
        [sys.executable, "-c", code, "serve", "--host", "127.0.0.1", "--port", str(free_port())],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode != 0
    assert "RAG_RERANK_MODEL" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]


# --- the embedder, created once --------------------------------------------------------------------------------------


def test_threads_racing_on_first_use_share_one_embedder(make_settings: Callable[..., Settings]) -> None:
    engine = Engine(make_settings())
    start = threading.Barrier(3)
    seen: list[object] = []

    def first_use() -> None:
        start.wait()
        seen.append(engine.embedder)

    threads = [threading.Thread(target=first_use) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 3 and len({id(e) for e in seen}) == 1


# --- the replaced index is closed when its last request ends -----------------------------------------------------


def test_a_replaced_index_stays_open_while_requests_hold_it_and_closes_after_the_last(
    served: tuple[Settings, Engine], embedder: Any
) -> None:
    settings, engine = served
    first = engine.version
    with engine.hold() as old:  # a slow request on version 1
        stream = engine.ask_stream(SMALL_QUESTION)  # and a streamed answer, paused after its first event
        assert next(stream)[0] == "citations"
        (settings.corpus_dir / NEW_NOTE).write_text(NEW_NOTE_TEXT, encoding="utf-8")
        assert run_ingest(settings, embedder=embedder).published
        assert engine.reload() and engine.version != first
        assert old.version == first and old.index.chunks([0])
    assert old.index.chunks([0])  # the paused stream still holds it
    kind, answer = list(stream)[-1]
    assert kind == "done" and answer.citations
    with pytest.raises(IndexNotReady, match="closed"):  # the last holder is gone: closed now, not in 30 s
        old.index.chunks([0])
    with engine.hold() as current:
        assert current.version == engine.version and current.index.chunks([0])


# --- chunking: structure per region ---------------------------------------------------------------------------------


def chunk_keys(chunks: list) -> list[tuple]:
    return [(c.chunk_id, c.start, c.end, c.heading_path, c.index_text) for c in chunks]


def webpage_chunks(text: str) -> list:
    return chunk_document(Document(doc_id=WEBPAGE, title="t", text=text, sha256="0" * 64, encoding="utf-8"))


def test_appending_a_markdown_section_to_the_outline_note_leaves_its_chunks_unchanged() -> None:
    text = (CORPUS / WEBPAGE).read_text(encoding="utf-8")
    before = webpage_chunks(text)
    after = webpage_chunks(text.rstrip("\n") + "\n\n## 附录：推理加速\n\n量化和 KV 缓存是常见的推理加速手段。\n")
    assert sum(1 for c in before if c.heading_path) >= 30
    assert chunk_keys(after[: len(before)]) == chunk_keys(before)
    assert len(after) == len(before) + 1
    assert after[-1].heading_path == ("附录：推理加速",) and "KV 缓存" in after[-1].text


def test_a_markdown_section_inserted_mid_note_leaves_the_chunks_before_it_unchanged() -> None:
    text = (CORPUS / WEBPAGE).read_text(encoding="utf-8")
    at = text.index("\n2. ")  # before the outline's second top-level section
    before = webpage_chunks(text)
    after = webpage_chunks(text[:at] + "\n\n## 插入的一节\n\n这是插入的内容。\n" + text[at:])
    kept = [c for c in before if c.end <= at]
    assert kept and chunk_keys(after[: len(kept)]) == chunk_keys(kept)
    assert after[len(kept)].heading_path == ("插入的一节",)


def test_outline_headings_count_before_the_first_markdown_heading_only() -> None:
    text = "1. 概念\n\n  • 术语\n    术语的解释。\n\n## 小节\n\n2. 列表项\n\n正文。\n"
    chunks = chunk_document(Document(doc_id="n.md", title="n", text=text, sha256="0" * 64, encoding="utf-8"))
    assert [c.heading_path for c in chunks] == [("概念", "术语"), ("小节",)]
