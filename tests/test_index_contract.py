"""One contract over both index backends (local files, Milvus Lite in a temp dir), through the real ingest
pipeline and the real embedder: build, incremental add/change/delete, publish, reload, keyword and dense
search, exact similarity, GC, a damaged or missing version, and a writer killed (SIGKILL) mid-publish."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ingest.pipeline import run_ingest
from rag.answer.reader import reader_texts
from rag.config import Settings
from rag.engine import Engine
from rag.errors import IndexCorrupted, IndexNotReady
from rag.index import IndexBuild, IndexStore, open_store
from rag.index.milvus import MilvusStore
from rag.index.milvus_schema import (
    VERSION_RE,
    blob_rows,
    collection,
    disconnect,
    new_version_name,
    version_time,
)
from rag.text import Tokenizer

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ["local", "milvus"]


class _Counting:
    """A Milvus client that records the methods called through it."""

    def __init__(self, client: Any, calls: list[str]) -> None:
        self._client, self._calls = client, calls

    def __getattr__(self, name: str) -> Any:
        self._calls.append(name)
        return getattr(self._client, name)

NOTES = {
    "transformer.md": "# Transformer\n\n## 注意力机制\n\nTransformer 使用自注意力机制（self-attention）建模序列中任意两个位置的关系。"
    "多头注意力把查询、键和值投影到多个子空间。\n",
    "gradient.md": "# 梯度下降\n\n## 学习率\n\n梯度下降沿损失函数的负梯度方向更新参数，学习率决定每一步的步长。"
    "学习率过大会发散，过小则收敛很慢。\n",
    "overfit.md": "# 过拟合\n\n## 正则化\n\n过拟合（Overfitting）指模型在训练集上表现很好，在测试集上表现很差。"
    "常用的缓解方法有 L2 正则化、Dropout 和早停。\n",
}


def write_notes(corpus: Path, notes: dict[str, str]) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    for name, text in notes.items():
        (corpus / name).write_text(text, encoding="utf-8")


@pytest.fixture(params=BACKENDS)
def kb(request: pytest.FixtureRequest, tmp_path: Path, make_settings: Callable[..., Settings]) -> Settings:
    """Settings of a small knowledge base (three notes) on one backend; Lite is closed again afterwards."""
    corpus = tmp_path / "notes"
    write_notes(corpus, NOTES)
    settings = make_settings(corpus_dir=corpus, index_backend=request.param, milvus_collection_prefix="kb_test")
    yield settings
    if request.param == "milvus":
        disconnect(str(settings.index_dir / "milvus.db"))


def ingest(settings: Settings, embedder: Any, **kw: Any):
    return run_ingest(settings, embedder=embedder, **kw)


def top_doc(hits: list[tuple[int, float]], index: Any) -> str:
    return index.chunks([hits[0][0]])[0].doc_id


def test_build_search_and_reload(kb: Settings, embedder: Any) -> None:
    summary = ingest(kb, embedder)
    assert summary.published and summary.documents == 3
    store = open_store(kb)
    assert isinstance(store, MilvusStore if kb.index_backend == "milvus" else IndexStore)
    assert store.current_version() == summary.version
    with store.load() as index:
        assert len(index) == summary.chunks == index.manifest.counts["chunks"]
        assert [d["doc_id"] for d in index.documents()] == sorted(NOTES)
        assert index.document("gradient.md").text == NOTES["gradient.md"]
        assert index.document("nope.md") is None
        rows = index.doc_rows("overfit.md")
        assert [c.doc_id for c in index.chunks(rows)] == ["overfit.md"] * len(rows)
        assert [c.chunk_id for c in index.doc_chunks("overfit.md")] == [c.chunk_id for c in index.chunks(rows)]
        with pytest.raises(IndexError):
            index.chunks([len(index) + 5])

        # keyword: our tokens, our BM25, alias weights honoured
        assert index.has_term("学习率") and not index.has_term("不存在的词")
        hits = index.keyword_search({"学习率": 1.0}, 3)
        assert top_doc(hits, index) == "gradient.md" and all(s > 0 for _, s in hits)
        assert hits[0][1] <= index.keyword_max_score({"学习率": 1.0}) + 1e-6
        half = index.keyword_search({"学习率": 0.5}, 3)
        assert half[0][1] == pytest.approx(hits[0][1] / 2, rel=1e-5)
        assert index.idf("学习率") > index.idf("的") >= 0 and index.doc_freq("学习率") == 1

        # dense and exact similarity of given rows
        q = embedder.embed_queries(["模型在测试集上表现差怎么办"])[0]
        dense = index.dense_search(q, 3)
        assert top_doc(dense, index) == "overfit.md"
        exact = index.similarities(q, [r for r, _ in dense])
        assert np.allclose(exact, [s for _, s in dense], atol=1e-5)
        found, mask = index.reader_vectors(["不是一句存进去的话"])
        assert not mask.any() and not found.any()
        # the reader's sentence vectors, asked for twice (retrieval, then the reader): the same both times
        stored = reader_texts(index.chunks([0]))
        first, found_first = index.reader_vectors([*stored, "不是一句存进去的话"])
        if kb.index_backend == "milvus":  # the second time comes from the index's cache, without a Milvus call
            client, calls = index._client, []
            index._client = _Counting(client, calls)
            again, found_again = index.reader_vectors([*stored, "不是一句存进去的话"])
            index._client = client
            assert calls == []
        else:
            again, found_again = index.reader_vectors([*stored, "不是一句存进去的话"])
        assert found_first[:-1].all() and not found_first[-1]
        assert np.array_equal(first, again) and np.array_equal(found_first, found_again)
        assert np.allclose(np.linalg.norm(first[:-1], axis=1), 1.0, atol=1e-3)

    # a fresh engine (a restarted replica) loads the same version and answers from it
    engine = Engine(kb, embedder=embedder)
    engine.load()
    assert engine.version == summary.version
    result = engine.search("学习率过大会怎样", top_k=2)
    assert result.hits[0].chunk.doc_id == "gradient.md"


def test_incremental_add_change_delete_reuses_cached_vectors(kb: Settings, embedder: Any) -> None:
    first = ingest(kb, embedder)
    assert ingest(kb, embedder).published is False  # nothing changed: no new version
    corpus = kb.corpus_dir
    (corpus / "transformer.md").unlink()
    (corpus / "gradient.md").write_text(NOTES["gradient.md"] + "\n## 动量\n\n动量法累积过去的梯度。\n", encoding="utf-8")
    write_notes(corpus, {"cnn.md": "# 卷积神经网络\n\n卷积层用共享权重的卷积核提取局部特征。\n"})
    second = ingest(kb, embedder)
    assert (second.added, second.changed, second.removed) == (["cnn.md"], ["gradient.md"], ["transformer.md"])
    assert second.reused > 0 and second.embedded < second.chunks  # unchanged chunks come from the cache
    store = open_store(kb)
    assert store.current_version() == second.version != first.version
    with store.load() as index:
        assert [d["doc_id"] for d in index.documents()] == ["cnn.md", "gradient.md", "overfit.md"]
        assert top_doc(index.keyword_search({"动量": 1.0}, 2), index) == "gradient.md"
        assert index.keyword_search(dict.fromkeys(Tokenizer(index.user_words).tokenize("多头注意力"), 1.0), 3) == []
        assert index.doc_rows("transformer.md") == []
    with store.load_version(first.version) as old:  # the previous version stays loadable
        assert "transformer.md" in old.manifest.files
    assert set(store.list_versions()) == {first.version, second.version}


def small_build(index: Any) -> IndexBuild:
    """A build of an index's own chunks (for publishing directly, as the benchmark does)."""
    rows = list(range(len(index)))
    chunks = index.chunks(rows)
    vectors = np.zeros((len(rows), index.manifest.dim), dtype=np.float32)
    vectors[:, 0] = 1.0
    docs = [index.document(d) for d in sorted({c.doc_id for c in chunks})]
    return IndexBuild(
        documents=docs, chunks=chunks, vectors=vectors, tokens=[list(c.index_text) for c in chunks],
        embed_model_id=index.manifest.embed_model_id, settings_fingerprint={}, alias_groups=index.alias_groups,
    )


def test_gc_keeps_the_published_and_previous_versions(kb: Settings, embedder: Any) -> None:
    ingest(kb, embedder)
    if kb.index_backend == "milvus":
        store: Any = MilvusStore.from_settings(kb)
        store.gc_grace_seconds = 0.0
    else:
        store = open_store(kb)
    with store.load() as index:
        build = small_build(index)
    versions = [store.publish(build).version for _ in range(3)]
    assert store.current_version() == versions[-1]
    assert store.list_versions() == sorted(versions[-2:])
    with store.load() as index:
        assert top_doc(index.keyword_search({"率": 1.0}, 1), index) == "gradient.md"
    if kb.index_backend == "milvus":  # within the grace period a superseded version stays for its replicas
        store.gc_grace_seconds = 3600.0
        newest = store.publish(build).version
        assert store.list_versions() == sorted([*versions[-2:], newest])


def damage(settings: Settings, version: str, how: str) -> None:
    """Break one published version: its data (`data`), its manifest (`manifest`) or all of it (`missing`)."""
    if settings.index_backend == "local":
        vdir = settings.index_dir / "versions" / version
        if how == "missing":
            import shutil

            shutil.rmtree(vdir)
        elif how == "manifest":
            (vdir / "manifest.json").write_text("{not json", encoding="utf-8")
        else:
            (vdir / "vectors.faiss").write_bytes(b"\0" * 10)
        return
    store = MilvusStore.from_settings(settings)
    if how == "missing":
        store._drop(version)
    elif how == "manifest":
        rows = blob_rows("manifest", "", "{not json")
        store.client.upsert(collection(store.prefix, version, "blobs"), rows)
    else:
        store.client.drop_collection(collection(store.prefix, version, "chunks"))


@pytest.mark.parametrize("how", ["data", "manifest", "missing"])
def test_a_damaged_or_missing_version_is_refused_and_the_previous_one_serves(
    kb: Settings, embedder: Any, how: str
) -> None:
    first = ingest(kb, embedder)
    write_notes(kb.corpus_dir, {"cnn.md": "# 卷积神经网络\n\n卷积层提取局部特征。\n"})
    second = ingest(kb, embedder)
    damage(kb, second.version, how)
    store = open_store(kb)
    with pytest.raises(IndexCorrupted):
        store.load()
    with store.load_fallback() as fallback:
        assert fallback.manifest.version == first.version
    engine = Engine(kb, embedder=embedder)
    engine.load()
    assert engine.version == first.version and engine.degraded
    assert engine.search("学习率", top_k=1).hits
    assert store.previous() is None  # an ingest rebuilds from the notes (and the embedding cache)
    third = ingest(kb, embedder)
    assert third.published and store.current_version() == third.version
    with store.load() as index:
        assert "cnn.md" in index.manifest.files


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from ingest.pipeline import run_ingest
    from rag.config import Settings

    def on_stage(name):
        if name == sys.argv[1]:
            os.kill(os.getpid(), signal.SIGKILL)

    run_ingest(Settings(_env_file=None), on_stage=on_stage)
    print("not killed")
    """
)


@pytest.mark.parametrize("stage", ["publish:files_written", "publish:manifest_written"])
def test_a_writer_killed_mid_publish_leaves_the_previous_version_serving(
    kb: Settings, embedder: Any, stage: str
) -> None:
    first = ingest(kb, embedder)
    (kb.corpus_dir / "transformer.md").unlink()  # no new text: the child never loads the embedder
    if kb.index_backend == "milvus":
        disconnect(str(kb.index_dir / "milvus.db"))  # Lite lets one process open the file: the child's turn
    env = os.environ | {
        "RAG_DATA_DIR": str(kb.data_dir), "RAG_CORPUS_DIR": str(kb.corpus_dir), "RAG_INDEX_BACKEND": kb.index_backend,
        "RAG_MILVUS_COLLECTION_PREFIX": kb.milvus_collection_prefix,
    }
    child = subprocess.run(
        [sys.executable, "-c", KILLER, stage], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
    store = open_store(kb)
    assert store.current_version() == first.version
    with store.load() as index:
        assert "transformer.md" in index.manifest.files
        query = dict.fromkeys(Tokenizer(index.user_words).tokenize("多头注意力"), 1.0)
        assert top_doc(index.keyword_search(query, 1), index) == "transformer.md"
    assert store.cleanup_debris() != []  # the dead writer's half-built version
    assert store.list_versions() == [first.version]
    second = ingest(kb, embedder)
    assert second.removed == ["transformer.md"] and store.current_version() == second.version


def test_milvus_lite_file_open_in_another_process_is_a_clear_error(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(index_backend="milvus", index_path=tmp_path / "idx")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, milvus_lite; milvus_lite.MilvusLite(sys.argv[1]); print('ok', flush=True); "
         "sys.stdin.read()", str(tmp_path / "idx" / "milvus.db")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        with pytest.raises(IndexNotReady, match="milvus-lite server"):
            open_store(settings).current_version()
    finally:
        holder.kill()
        holder.wait()


def test_a_milvus_failure_at_query_time_is_index_not_ready(
    tmp_path: Path, make_settings: Callable[..., Settings], embedder: Any
) -> None:
    corpus = tmp_path / "notes"
    write_notes(corpus, NOTES)
    settings = make_settings(corpus_dir=corpus, index_backend="milvus", milvus_collection_prefix="kb_fail")
    try:
        summary = ingest(settings, embedder)
        store = MilvusStore.from_settings(settings)
        index = store.load()
        store.client.drop_collection(collection(store.prefix, summary.version, "chunks"))
        with pytest.raises(IndexNotReady, match="Milvus failed"):
            index.keyword_search({"学习率": 1.0}, 3)
        with pytest.raises(IndexNotReady, match="Milvus failed"):
            index.chunks([0])
    finally:
        disconnect(str(settings.index_dir / "milvus.db"))


def test_milvus_version_names_sort_in_creation_order_within_one_second() -> None:
    """Versions published within one second must still order by age: GC keeps "the previous" by that order."""
    names = [new_version_name() for _ in range(200)]
    assert names == sorted(names)
    assert all(VERSION_RE.fullmatch(n) for n in names)
    times = [version_time(n) for n in names]
    assert times == sorted(times) and abs(times[-1] - time.time()) < 60
    old = "v20261202T171339Z_b6239846"  # the second-resolution names of earlier indexes still parse
    assert VERSION_RE.fullmatch(old) and version_time(old) == 1796231619.0
