"""rag.index against real files: SQLite, FAISS, rank_bm25/bm25s, fcntl locks and SIGKILLed writers."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from rag.errors import IndexCorrupted, IndexNotReady, IngestBusy
from rag.index import (
    FLAT_MAX_VECTORS,
    K1,
    PUBLISH_STAGES,
    RANK_BM25_MAX_CHUNKS,
    B,
    BM25sIndex,
    IndexBuild,
    IndexStore,
    Manifest,
    RankBM25Index,
    WriteLock,
    bm25_idf,
    choose_keyword_backend,
    choose_vector_index,
)
from rag.types import Chunk, Document, SkippedFile

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ["rank_bm25", "bm25s"]


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def make_build(
    token_lists: list[list[str]],
    *,
    dim: int = 16,
    seed: int = 0,
    docs: int | None = None,
    tag: str = "",
) -> IndexBuild:
    """One chunk per token list, spread over `docs` documents; chunk text = its tokens joined."""
    n = len(token_lists)
    n_docs = docs if docs is not None else max(1, min(n, 5))
    texts: dict[int, list[str]] = {d: [] for d in range(n_docs)}
    chunks: list[Chunk] = []
    offsets = [0] * n_docs
    for i, toks in enumerate(token_lists):
        d = i % n_docs
        body = " ".join(toks) + f" {tag}{i}"
        start = offsets[d]
        texts[d].append(body)
        offsets[d] += len(body) + 1
        chunks.append(
            Chunk(
                chunk_id=f"{tag}c{i}",
                doc_id=f"notes/d{d}.md",
                heading_path=("模型", f"节 {i}"),
                start=start,
                end=start + len(body),
                text=body,
                index_text=f"模型 > 节 {i}\n{body}",
                ordinal=len(texts[d]) - 1,
            )
        )
    documents = [
        Document(
            doc_id=f"notes/d{d}.md",
            title=f"文档 {d}",
            text="\n".join(texts[d]),
            sha256=f"{d:064x}",
            encoding="utf-8",
            size_bytes=len("\n".join(texts[d]).encode()),
            mtime=1700000000.0 + d,
        )
        for d in range(n_docs)
    ]
    return IndexBuild(
        documents=documents,
        chunks=chunks,
        vectors=unit_vectors(n, dim, seed),
        tokens=[list(t) for t in token_lists],
        embed_model_id="test-embedder",
        settings_fingerprint={"chunk_size": 500, "overlap": 80, "tokenizer": 1},
        alias_groups=[["lora", "低秩适配"]],
        user_words=["低秩适配"],
        skipped=[SkippedFile(path="big.md", reason="too large")],
        ingest_summary={"user_glossary": [["a", "b"]]},
        vector_terms=["lora", "低秩适配"],
        term_vectors=unit_vectors(2, dim, seed + 7),
    )


SMALL_TOKENS = [
    ["transformer", "注意力", "机制"],
    ["lora", "微调", "参数"],
    ["低秩适配", "微调"],
    ["梯度", "下降", "学习率"],
    ["注意力", "多头", "transformer", "transformer"],
    ["rag", "检索", "生成"],
    ["向量", "检索", "faiss"],
    ["bm25", "检索", "关键词"],
]


def synthetic_tokens(n: int, vocab: int = 3000, length: int = 40, seed: int = 1) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    ids = (rng.zipf(1.3, size=(n, length)) - 1) % vocab
    lengths = rng.integers(5, length + 1, size=n)
    return [[f"w{x}" for x in row[:k]] for row, k in zip(ids, lengths, strict=True)]


def run_python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


# ---------------------------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("backend", BACKENDS)
def test_publish_then_load_round_trips_everything(tmp_path: Path, backend: str) -> None:
    build = make_build(SMALL_TOKENS, docs=3)
    store = IndexStore(tmp_path / "index", keyword_backend=backend, vector_index="flat")
    manifest = store.publish(build)

    assert store.current_version() == manifest.version
    with store.load() as index:
        assert len(index) == len(build.chunks)
        assert index.version == manifest.version
        assert index.manifest.keyword_backend == backend == index.keyword_backend
        assert index.manifest.vector_index == "flat"
        assert index.manifest.dim == 16
        assert index.manifest.counts == {"documents": 3, "chunks": 8}
        assert index.manifest.files == {d.doc_id: d.sha256 for d in build.documents}
        assert index.manifest.embed_model_id == "test-embedder"
        assert index.manifest.settings_fingerprint == build.settings_fingerprint
        assert index.manifest.ingest_summary == {"user_glossary": [["a", "b"]]}
        assert index.alias_groups == [["lora", "低秩适配"]]
        assert index.user_words == ["低秩适配"]
        assert index.skipped == [SkippedFile(path="big.md", reason="too large")]
        assert index.vector_terms == ["lora", "低秩适配"]
        np.testing.assert_array_equal(index.term_vectors, build.term_vectors)

        # rows come back as the very chunks that were published, in the order asked for
        assert index.chunks([5, 0, 5]) == [build.chunks[5], build.chunks[0], build.chunks[5]]
        assert list(index.all_chunks_iter(batch=3)) == build.chunks
        assert index.chunk_by_id("c4") == build.chunks[4]
        assert index.chunk_by_id("nope") is None
        assert index.row_of("c6") == 6
        with pytest.raises(IndexError):
            index.chunks([len(build.chunks)])

        doc = index.document("notes/d1.md")
        assert doc == build.documents[1]
        assert doc is not None and doc.text == build.documents[1].text
        assert index.document("missing.md") is None
        expected = [c for c in build.chunks if c.doc_id == "notes/d1.md"]
        assert index.doc_chunks("notes/d1.md") == sorted(expected, key=lambda c: c.ordinal)
        assert index.doc_rows("notes/d1.md") == [1, 4, 7]
        listing = index.documents()
        assert [d["doc_id"] for d in listing] == ["notes/d0.md", "notes/d1.md", "notes/d2.md"]
        assert [d["chunks"] for d in listing] == [3, 3, 2]
        assert "text" not in listing[0] and listing[0]["title"] == "文档 0"

        np.testing.assert_array_equal(index.vectors([3, 1]), build.vectors[[3, 1]])
        assert index.vectors([]).shape == (0, 16)
        hits = index.dense_search(build.vectors[2], 3)
        assert hits[0][0] == 2 and hits[0][1] == pytest.approx(1.0, abs=1e-5)
        assert len(hits) == 3 and hits[0][1] >= hits[1][1] >= hits[2][1]
        assert len(index.dense_search(build.vectors[2], 100)) == len(build.chunks)


def test_manifest_json_round_trip_and_rejects_malformed() -> None:
    manifest = Manifest(
        version="v1",
        created_at="2024-01-01T00:00:00Z",
        embed_model_id="m",
        dim=4,
        settings_fingerprint={"a": 1},
        files={"x.md": "ab"},
        counts={"documents": 1, "chunks": 2},
        checksums={"chunks.sqlite": "00"},
        sizes={"chunks.sqlite": 10},
        keyword_backend="bm25s",
        vector_index="hnsw",
        skipped=[{"path": "p", "reason": "r"}],
    )
    assert Manifest.from_json(manifest.to_json()) == manifest
    data = json.loads(manifest.to_json())
    del data["checksums"]
    with pytest.raises(ValueError):
        Manifest.from_json(json.dumps(data))
    with pytest.raises(ValueError):
        Manifest.from_json("{not json")
    with pytest.raises(ValueError):
        Manifest.from_json(manifest.to_json().replace('"hnsw"', '"ivf"'))


def test_publish_rejects_inconsistent_builds_and_leaves_no_debris(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index")
    good = store.publish(make_build(SMALL_TOKENS))

    short = make_build(SMALL_TOKENS)
    short.tokens = short.tokens[:-1]
    with pytest.raises(ValueError, match="token lists"):
        store.publish(short)

    unnormalised = make_build(SMALL_TOKENS)
    unnormalised.vectors = unnormalised.vectors * 3
    with pytest.raises(ValueError, match="normalised"):
        store.publish(unnormalised)

    orphan = make_build(SMALL_TOKENS)
    orphan.documents = orphan.documents[1:]
    with pytest.raises(ValueError, match="unknown documents"):
        store.publish(orphan)

    terms = make_build(SMALL_TOKENS)
    terms.vector_terms = terms.vector_terms[:1]
    with pytest.raises(ValueError, match="term vectors"):
        store.publish(terms)

    duplicate = make_build(SMALL_TOKENS)
    duplicate.chunks[1] = duplicate.chunks[0]
    with pytest.raises(ValueError, match="duplicate chunk_id"):  # fails inside the tmp dir
        store.publish(duplicate)

    assert store.current_version() == good.version
    assert os.listdir(store.versions_dir) == [good.version]


# ---------------------------------------------------------------------------------------------- keyword search


@pytest.mark.parametrize("backend", BACKENDS)
def test_keyword_search_ranks_the_chunk_with_the_term_first(tmp_path: Path, backend: str) -> None:
    store = IndexStore(tmp_path / "index", keyword_backend=backend)
    store.publish(make_build(SMALL_TOKENS))
    with store.load() as index:
        hits = index.keyword_search({"faiss": 1.0}, 5)
        assert hits and hits[0][0] == 6 and len(hits) == 1  # only chunks that contain the term

        hits = index.keyword_search({"transformer": 1.0}, 5)
        assert [row for row, _ in hits] == [4, 0]  # tf 2 beats tf 1
        assert all(score > 0 for _, score in hits)

        assert index.keyword_search({"不存在": 1.0}, 5) == []
        assert index.keyword_search({"faiss": 0.0}, 5) == []
        assert index.keyword_search({"检索": 1.0}, 0) == []
        assert index.keyword_search({"检索": 1.0}, 2) == index.keyword_search({"检索": 1.0}, 10)[:2]

        assert index.has_term("检索") and not index.has_term("不存在")
        assert index.doc_freq("检索") == 3 and index.doc_freq("不存在") == 0
        assert index.idf("检索") == pytest.approx(math.log(1 + (8 - 3 + 0.5) / (3 + 0.5)))
        assert index.idf("faiss") > index.idf("检索") > 0
        assert index.idf("不存在") == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_keyword_weights_rank_expansions_below_original_terms(tmp_path: Path, backend: str) -> None:
    # "lora" and "低秩适配" are aliases; each appears in one chunk of the same shape
    tokens = [
        ["lora", "微调", "参数"],
        ["低秩适配", "微调", "参数"],
        ["梯度", "下降", "参数"],
        ["rag", "检索"],
    ]
    store = IndexStore(tmp_path / "index", keyword_backend=backend)
    store.publish(make_build(tokens))
    with store.load() as index:
        hits = index.keyword_search({"lora": 1.0, "低秩适配": 0.3}, 10)
        assert [row for row, _ in hits] == [0, 1]
        assert hits[1][1] == pytest.approx(0.3 * hits[0][1], rel=1e-5)

        hits = index.keyword_search({"lora": 0.3, "低秩适配": 1.0}, 10)
        assert [row for row, _ in hits] == [1, 0]

        query = {"lora": 1.0, "低秩适配": 0.3, "参数": 1.0, "unknown": 1.0}
        best = index.keyword_search(query, 1)[0][1]
        bound = index.keyword_max_score(query)
        expected = sum(w * bm25_idf(index.doc_freq(t), 4) * (K1 + 1) for t, w in query.items())
        assert bound == pytest.approx(expected)
        assert 0 < best < bound


def _scores_by_formula(tokens: list[list[str]], query: dict[str, float]) -> np.ndarray:
    """Reference BM25 straight from the formula both backends promise to implement."""
    n = len(tokens)
    avgdl = sum(len(t) for t in tokens) / n
    df: dict[str, int] = {}
    for toks in tokens:
        for term in set(toks):
            df[term] = df.get(term, 0) + 1
    scores = np.zeros(n)
    for i, toks in enumerate(tokens):
        for term, weight in query.items():
            tf = toks.count(term)
            if tf:
                norm = K1 * (1 - B + B * len(toks) / avgdl)
                scores[i] += weight * bm25_idf(df[term], n) * tf * (K1 + 1) / (tf + norm)
    return scores


def test_keyword_backends_agree_with_each_other_and_the_formula(tmp_path: Path) -> None:
    tokens = synthetic_tokens(3000)
    indexes = {}
    for cls in (RankBM25Index, BM25sIndex):
        built = cls()
        built.build(tokens)
        built.save(tmp_path / cls.name)
        indexes[cls.name] = cls.load(tmp_path / cls.name)
    rng = np.random.default_rng(7)
    overlaps = []
    for _ in range(30):
        terms = [f"w{int(x)}" for x in rng.integers(0, 300, size=4)]
        query = {t: (1.0 if i < 2 else 0.3) for i, t in enumerate(terms)}
        a = indexes["rank_bm25"].search(query, 10)
        b = indexes["bm25s"].search(query, 10)
        overlaps.append(len({r for r, _ in a} & {r for r, _ in b}) / max(len(a), 1))
        reference = _scores_by_formula(tokens, query)
        for row, score in a + b:
            assert score == pytest.approx(reference[row], rel=1e-4)
        assert a[0][1] == pytest.approx(reference.max(), rel=1e-4)
        for term in terms:
            assert indexes["rank_bm25"].doc_freq(term) == indexes["bm25s"].doc_freq(term)
        assert indexes["rank_bm25"].max_score(query) == pytest.approx(indexes["bm25s"].max_score(query))
    assert np.mean(overlaps) >= 0.9


def test_bm25s_matrix_equals_what_bm25s_itself_builds(tmp_path: Path) -> None:
    import bm25s

    tokens = synthetic_tokens(500, vocab=400) + [[]]  # an empty chunk too
    ours = BM25sIndex()
    ours.build(tokens)
    ours.save(tmp_path / "kw")
    loaded = BM25sIndex.load(tmp_path / "kw")
    reference = bm25s.BM25(k1=K1, b=B, method="atire", idf_method="lucene")
    reference.index(tokens, show_progress=False)
    ref = reference.scores
    vocab = {t for toks in tokens for t in toks}
    assert set(loaded._vocab) == vocab
    for term in vocab:
        mine, theirs = loaded._vocab[term], reference.vocab_dict[term]
        lo, hi = loaded._indptr[mine], loaded._indptr[mine + 1]
        rlo, rhi = ref["indptr"][theirs], ref["indptr"][theirs + 1]
        order = np.argsort(ref["indices"][rlo:rhi])
        np.testing.assert_array_equal(loaded._indices[lo:hi], ref["indices"][rlo:rhi][order])
        np.testing.assert_allclose(loaded._data[lo:hi], ref["data"][rlo:rhi][order], rtol=1e-5)


# ---------------------------------------------------------------------------------------------- dense search


def test_hnsw_recall_against_flat(tmp_path: Path) -> None:
    n, dim = 5000, 384
    build = make_build(synthetic_tokens(n, length=6), dim=dim, docs=50)
    flat_store = IndexStore(tmp_path / "flat", vector_index="flat")
    hnsw_store = IndexStore(tmp_path / "hnsw", vector_index="hnsw", hnsw_m=32, hnsw_ef_search=128)
    flat_store.publish(build)
    hnsw_store.publish(build)
    # queries resemble stored passages, as real questions do: stored vectors plus noise (|noise| ~ 0.5)
    rng = np.random.default_rng(99)
    queries = build.vectors[rng.integers(0, n, 100)] + 0.5 * unit_vectors(100, dim, seed=98)
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    with flat_store.load() as flat, hnsw_store.load() as hnsw:
        assert flat.manifest.vector_index == "flat" and hnsw.manifest.vector_index == "hnsw"
        recalls = []
        for q in queries:
            exact = flat.dense_search(q, 10)
            brute = np.argsort(-(build.vectors @ q), kind="stable")[:10]
            assert {r for r, _ in exact} == set(brute.tolist())
            approx = hnsw.dense_search(q, 10)
            recalls.append(len({r for r, _ in exact} & {r for r, _ in approx}) / 10)
        np.testing.assert_allclose(hnsw.vectors([0, 4999]), build.vectors[[0, 4999]])
    assert np.mean(recalls) >= 0.9


def test_auto_backend_choices_by_size() -> None:
    assert choose_keyword_backend("auto", RANK_BM25_MAX_CHUNKS - 1) == "rank_bm25"
    assert choose_keyword_backend("auto", RANK_BM25_MAX_CHUNKS) == "bm25s"
    assert choose_keyword_backend("bm25s", 10) == "bm25s"
    assert choose_vector_index("auto", FLAT_MAX_VECTORS) == "flat"
    assert choose_vector_index("auto", FLAT_MAX_VECTORS + 1) == "hnsw"
    assert choose_vector_index("flat", 10**7) == "flat"
    with pytest.raises(ValueError):
        IndexStore(Path("unused"), keyword_backend="tfidf")


def test_auto_publish_records_the_backends_used(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index")
    manifest = store.publish(make_build(SMALL_TOKENS))
    assert (manifest.keyword_backend, manifest.vector_index) == ("rank_bm25", "flat")
    assert store.load().manifest.keyword_backend == "rank_bm25"


def test_concurrent_queries_match_serial_results(tmp_path: Path) -> None:
    build = make_build(synthetic_tokens(2000), dim=32, docs=20)
    store = IndexStore(tmp_path / "index", keyword_backend="rank_bm25")
    store.publish(build)
    index = store.load()
    rng = np.random.default_rng(3)
    work = [
        ({f"w{int(x)}": 1.0 for x in rng.integers(0, 200, 3)}, unit_vectors(1, 32, seed=i)[0], i * 7 % 2000)
        for i in range(64)
    ]

    def run(item: tuple[dict[str, float], np.ndarray, int]) -> tuple:
        query, vector, row = item
        return (
            index.keyword_search(query, 10),
            index.dense_search(vector, 10),
            index.chunks([row, (row + 1) % 2000]),
        )

    serial = [run(item) for item in work]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(run, work))
    assert parallel == serial
    assert serial[5][2][0] == build.chunks[35]
    index.close()
    with pytest.raises(IndexNotReady):
        index.chunks([0])


# ---------------------------------------------------------------------------------------------- versions


def test_republish_switches_current_and_keeps_one_previous(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index")
    first = store.publish(make_build(SMALL_TOKENS, tag="a"))
    held = store.load()  # an engine keeps serving this while newer versions are published

    second = store.publish(make_build(SMALL_TOKENS[:5], tag="b"))
    assert store.current_version() == second.version
    assert sorted(store.list_versions()) == sorted([first.version, second.version])

    third = store.publish(make_build(SMALL_TOKENS[:3], tag="c"))
    assert store.current_version() == third.version
    assert sorted(os.listdir(store.versions_dir)) == sorted([second.version, third.version])
    assert (store.index_dir / "CURRENT").read_text().strip() == third.version

    with store.load() as current:
        assert len(current) == 3 and current.chunk_by_id("cc0") is not None
    with store.load_version(second.version) as older:
        assert len(older) == 5 and older.chunk_by_id("bc0") is not None
    with pytest.raises(IndexCorrupted):
        store.load_version(first.version)

    # the index loaded before its files were deleted keeps answering
    assert held.chunk_by_id("ac1") == make_build(SMALL_TOKENS, tag="a").chunks[1]
    assert held.dense_search(held.vectors([2])[0], 1)[0][0] == 2
    assert held.keyword_search({"faiss": 1.0}, 1)[0][0] == 6
    held.close()


def test_missing_index_is_not_ready_with_an_ingest_hint(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index")
    assert store.current_version() is None
    assert store.previous() is None
    assert store.cleanup_debris() == []
    with pytest.raises(IndexNotReady, match="ingest") as info:
        store.load()
    assert not isinstance(info.value, IndexCorrupted)


def _corrupt_truncate_vectors(version_dir: Path) -> None:
    path = version_dir / "vectors.faiss"
    path.write_bytes(path.read_bytes()[:-100])


def _corrupt_flip_sqlite_byte(version_dir: Path) -> None:
    path = version_dir / "chunks.sqlite"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _corrupt_manifest_checksum(version_dir: Path) -> None:
    path = version_dir / "manifest.json"
    data = json.loads(path.read_text())
    digest = data["checksums"]["glossary.json"]
    data["checksums"]["glossary.json"] = ("0" if digest[0] != "0" else "1") + digest[1:]
    path.write_text(json.dumps(data))


def _corrupt_manifest_syntax(version_dir: Path) -> None:
    path = version_dir / "manifest.json"
    path.write_text(path.read_text()[:-20])


def _corrupt_delete_keyword_file(version_dir: Path) -> None:
    victim = next(p for p in sorted((version_dir / "keyword").iterdir()) if p.name != "meta.json")
    victim.unlink()


def _corrupt_manifest_counts(version_dir: Path) -> None:
    path = version_dir / "manifest.json"
    data = json.loads(path.read_text())
    data["counts"]["chunks"] += 1
    path.write_text(json.dumps(data))


def _corrupt_term_vectors_shape(version_dir: Path) -> None:
    # a well-formed .npy of the wrong shape, with a manifest that matches it: only the shape check can tell
    path = version_dir / "terms.npy"
    np.save(path, np.zeros((3, 16), dtype=np.float32), allow_pickle=False)
    manifest = version_dir / "manifest.json"
    data = json.loads(manifest.read_text())
    data["checksums"]["terms.npy"] = hashlib.sha256(path.read_bytes()).hexdigest()
    data["sizes"]["terms.npy"] = path.stat().st_size
    manifest.write_text(json.dumps(data))


CORRUPTIONS = {
    "truncated vectors.faiss": (_corrupt_truncate_vectors, "vectors.faiss"),
    "flipped byte in chunks.sqlite": (_corrupt_flip_sqlite_byte, "checksum mismatch in chunks.sqlite"),
    "edited manifest checksum": (_corrupt_manifest_checksum, "checksum mismatch in glossary.json"),
    "broken manifest JSON": (_corrupt_manifest_syntax, "manifest.json"),
    "missing keyword file": (_corrupt_delete_keyword_file, "missing"),
    "edited manifest counts": (_corrupt_manifest_counts, "chunk rows"),
    "term vectors of the wrong shape": (_corrupt_term_vectors_shape, "terms.npy failed to load"),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corruption_is_detected_and_not_papered_over(tmp_path: Path, name: str, backend: str) -> None:
    corrupt, message = CORRUPTIONS[name]
    store = IndexStore(tmp_path / "index", keyword_backend=backend)
    old = store.publish(make_build(SMALL_TOKENS, tag="old"))
    new = store.publish(make_build(SMALL_TOKENS, tag="new"))
    corrupt(store.versions_dir / new.version)

    with pytest.raises(IndexCorrupted, match=message) as info:
        store.load()
    assert "rag ingest --full" in info.value.message
    assert store.previous() is None  # an incremental ingest then rebuilds from scratch
    with store.load_version(old.version) as intact:  # still there; load() does not fall back to it
        assert intact.chunk_by_id("oldc0") is not None


def test_size_check_catches_truncation_even_without_hashing(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index")
    manifest = store.publish(make_build(SMALL_TOKENS))
    _corrupt_truncate_vectors(store.versions_dir / manifest.version)
    with pytest.raises(IndexCorrupted, match="size mismatch in vectors.faiss"):
        store.load(verify=False)


def test_garbage_current_file_is_corruption(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index")
    store.publish(make_build(SMALL_TOKENS))
    (store.index_dir / "CURRENT").write_text("../../etc\n")
    with pytest.raises(IndexCorrupted):
        store.load()
    (store.index_dir / "CURRENT").write_text("20990101T000000Z-gone\n")
    with pytest.raises(IndexCorrupted, match="missing"):
        store.load()


# ---------------------------------------------------------------------------------------------- locking & crashes


HOLD_LOCK = """
    import sys
    from pathlib import Path
    from rag.index import WriteLock
    with WriteLock(Path(sys.argv[1])):
        print("locked", flush=True)
        sys.stdin.read()
"""


def test_write_lock_excludes_a_second_fd_and_a_second_process(tmp_path: Path) -> None:
    index_dir = tmp_path / "index"
    with WriteLock(index_dir) as lock:
        assert lock.held
        with pytest.raises(IngestBusy, match="another ingest is running"):
            WriteLock(index_dir).acquire()
    with WriteLock(index_dir):  # released on exit
        pass

    holder = run_python(HOLD_LOCK, str(index_dir))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(IngestBusy, match=f"pid {holder.pid}"):
            WriteLock(index_dir, timeout=0.2).acquire()
        store = IndexStore(index_dir)
        with pytest.raises(IngestBusy):  # publishing without the lock takes it, and it is busy
            store.publish(make_build(SMALL_TOKENS))
        assert store.current_version() is None
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
        holder.stderr.close()
        holder.stdin.close()
    with WriteLock(index_dir):  # a killed holder's lock dies with it
        pass


def test_write_lock_waits_for_the_holder_within_its_timeout(tmp_path: Path) -> None:
    index_dir = tmp_path / "index"
    first = WriteLock(index_dir)
    first.acquire()
    releaser = threading.Timer(0.3, first.release)
    releaser.start()
    try:
        with WriteLock(index_dir, timeout=30) as second:
            assert second.held and not first.held
    finally:
        releaser.join()


def test_cleanup_debris_removes_tmp_dirs_unless_a_writer_is_alive(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index")
    manifest = store.publish(make_build(SMALL_TOKENS))
    for name in (".tmp-20240101T000000Z-dead", ".tmp-gc-old"):
        (store.versions_dir / name / "keyword").mkdir(parents=True)
        (store.versions_dir / name / "keyword" / "x.npy").write_bytes(b"x" * 100)

    holder = run_python(HOLD_LOCK, str(store.index_dir))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert store.cleanup_debris() == []  # that writer may be building them
        assert (store.versions_dir / ".tmp-gc-old").exists()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
        holder.stderr.close()
        holder.stdin.close()

    assert sorted(store.cleanup_debris()) == [".tmp-20240101T000000Z-dead", ".tmp-gc-old"]
    assert os.listdir(store.versions_dir) == [manifest.version]
    with WriteLock(store.index_dir):  # the ingest's own lock lets it clean up too
        (store.versions_dir / ".tmp-x").mkdir()
        assert store.cleanup_debris() == [".tmp-x"]
    assert store.load().version == manifest.version


PUBLISH_AND_DIE = """
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from test_store import SMALL_TOKENS, make_build
    from rag.index import IndexStore, WriteLock

    def on_stage(stage):
        if stage == sys.argv[2]:
            os.kill(os.getpid(), signal.SIGKILL)

    index_dir = Path(sys.argv[1])
    with WriteLock(index_dir):
        IndexStore(index_dir).publish(make_build(SMALL_TOKENS[:4], tag="dead"), on_stage=on_stage)
    print("survived", flush=True)
"""


@pytest.mark.parametrize("stage", PUBLISH_STAGES[:4])
def test_writer_killed_mid_publish_leaves_previous_version_serving(tmp_path: Path, stage: str) -> None:
    store = IndexStore(tmp_path / "index")
    before = store.publish(make_build(SMALL_TOKENS, tag="live"))

    proc = run_python(PUBLISH_AND_DIE, str(store.index_dir), stage, str(Path(__file__).parent))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err
    assert "survived" not in out

    leftovers = set(os.listdir(store.versions_dir)) - {before.version}
    assert len(leftovers) == 1  # the dead writer's tmp dir, or its renamed but unpublished version
    assert store.current_version() == before.version
    with store.load() as index:
        assert index.version == before.version and len(index) == len(SMALL_TOKENS)
        assert index.chunk_by_id("livec0") is not None and index.chunk_by_id("deadc0") is None

    after = store.publish(make_build(SMALL_TOKENS[:2], tag="next"))
    assert store.current_version() == after.version
    assert sorted(os.listdir(store.versions_dir)) == sorted([before.version, after.version])
    with store.load() as index:
        assert len(index) == 2 and index.chunk_by_id("nextc1") is not None


def test_writer_killed_after_switch_has_published(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index")
    store.publish(make_build(SMALL_TOKENS, tag="live"))
    proc = run_python(PUBLISH_AND_DIE, str(store.index_dir), "publish:switched", str(Path(__file__).parent))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err
    with store.load() as index:
        assert len(index) == 4 and index.chunk_by_id("deadc3") is not None


def test_interrupted_gc_never_leaves_a_half_deleted_version_looking_valid(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index")
    versions = [store.publish(make_build(SMALL_TOKENS, tag=t)).version for t in "abc"]
    # simulate a crash during GC: the retired version was renamed but only partly deleted
    (store.versions_dir / ".tmp-gc-x").mkdir()
    shutil.copy(store.versions_dir / versions[2] / "manifest.json", store.versions_dir / ".tmp-gc-x")
    assert ".tmp-gc-x" not in store.list_versions()
    store.publish(make_build(SMALL_TOKENS, tag="d"))
    assert not any(name.startswith(".tmp-") for name in os.listdir(store.versions_dir))


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_empty_build_publishes_an_empty_but_valid_index(tmp_path: Path, backend: str) -> None:
    store = IndexStore(tmp_path / "index", keyword_backend=backend)
    store.publish(IndexBuild([], [], np.zeros((0, 8), dtype=np.float32), [], "m", {}))
    with store.load() as index:
        assert len(index) == 0 and index.documents() == [] and list(index.all_chunks_iter()) == []
        assert index.keyword_search({"a": 1.0}, 5) == [] and index.keyword_max_score({"a": 1.0}) == 0.0
        assert index.dense_search(unit_vectors(1, 8)[0], 5) == []
