"""Speed at every size, checked for correctness: bf16 vs fp32 retrieval quality on the dev set, keyword
backend parity on the bundled corpus, and the storage properties a million-chunk index relies on
(chunks in SQLite, vectors and BM25 arrays memory-mapped, no per-chunk Python objects).

The bf16/fp32 cosine agreement on tests/data/e5_reference.jsonl lives in tests/test_embedding.py.
"""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import pytest

from ingest import pipeline
from ingest.pipeline import run_ingest
from rag.aliases import AliasIndex
from rag.bench.scale import build_scaled_index
from rag.config import Settings
from rag.embedding import load_embedder
from rag.engine import Engine
from rag.errors import IndexNotReady
from rag.evaluation import is_hit, load_questions
from rag.index import SQLITE_FILE, BM25sIndex, IndexStore, LoadedIndex, RankBM25Index
from rag.text import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "eval" / "dev.jsonl"


def dev_metrics(engine: Engine) -> dict[str, float]:
    """hit@5 and MRR@10 of hybrid search over the answerable dev questions (eval/README rules)."""
    ranks: list[int | None] = []
    for q in load_questions(DEV):
        if not q.answerable or not q.gold:
            continue
        hits = engine.search(q.question, top_k=10).hits
        ranks.append(next((h.rank for h in hits if is_hit(h.chunk.text, q.gold)), None))
    return {
        "n": len(ranks),
        "hit@5": sum(1 for r in ranks if r is not None and r <= 5) / len(ranks),
        "mrr@10": sum(1 / r for r in ranks if r is not None and r <= 10) / len(ranks),
    }


@pytest.fixture(scope="module")
def session_index(base_settings: Settings, corpus_index) -> LoadedIndex:
    """The published session index of the bundled corpus, opened read-only."""
    index = IndexStore(base_settings.index_dir).load(verify=False)
    yield index
    index.close()


@pytest.fixture(scope="module")
def corpus_tokens(session_index: LoadedIndex, base_settings: Settings) -> tuple[Tokenizer, list[list[str]]]:
    """The BM25 tokens of every chunk of the session index, re-derived as ingest derives them."""
    tokenizer = Tokenizer(session_index.user_words, cache_dir=base_settings.cache_dir / "jieba")
    return tokenizer, [tokenizer.tokenize(c.index_text) for c in session_index.all_chunks_iter()]


# ------------------------------------------------------------------------------------ bf16 vs fp32


@pytest.mark.slow
def test_dev_retrieval_does_not_drop_with_bf16_and_dtypes_never_mix(
    make_settings: Callable[..., Settings],
    engine: Engine,
    embedder,
    base_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One full embedding of the corpus in the dtype the session did not use; then compare on eval/dev.

    "Does not drop" allows at most one question's worth of difference in hit@5 and in MRR (a single
    rank swap on a near-tie), so the test pins quality without pinning floating-point luck. Only retrieval
    is compared, so the reader's sentences (about half of a full ingest's embedding) are left out of both
    ingests here: the other dtype's index reads degraded, which search does not use.
    """
    monkeypatch.setattr(pipeline, "reader_texts", lambda chunks: [])
    session_dtype = embedder.dtype
    other = "float32" if session_dtype == "bfloat16" else "bfloat16"
    settings = make_settings(embed_dtype=other)  # its embedding cache holds the session's vectors only
    other_embedder = load_embedder(settings)
    assert other_embedder.model_id.endswith(f"@{other}")

    summary = run_ingest(settings, embedder=other_embedder)
    assert summary.published and summary.reused == 0, "vectors of another dtype were reused"
    store = IndexStore(settings.index_dir)
    other_version = store.current_version()
    with store.load() as index:
        assert index.manifest.embed_model_id == other_embedder.model_id
        assert index.manifest.settings_fingerprint["embed_model_id"] == other_embedder.model_id

    other_engine = Engine(settings, embedder=other_embedder)
    other_engine.load()
    metrics = {session_dtype: dev_metrics(engine), other: dev_metrics(other_engine)}
    print(f"\ndev retrieval by dtype: {metrics}")
    one_question = 1 / metrics["float32"]["n"]
    assert metrics["bfloat16"]["hit@5"] >= metrics["float32"]["hit@5"] - one_question - 1e-9
    assert metrics["bfloat16"]["mrr@10"] >= metrics["float32"]["mrr@10"] - one_question - 1e-9

    # an engine of the session dtype refuses the other dtype's index instead of mixing vector spaces
    with pytest.raises(IndexNotReady, match="rag ingest --full"):
        Engine(settings, embedder=embedder).load()

    # switching the setting back rebuilds the index from the session dtype's cached vectors, none mixed
    back = settings.model_copy(update={"embed_dtype": session_dtype})
    summary = run_ingest(back, embedder=embedder)
    assert summary.published and summary.embedded == 0
    assert store.current_version() != other_version
    with store.load() as rebuilt, IndexStore(base_settings.index_dir).load(verify=False) as session:
        assert rebuilt.manifest.embed_model_id == embedder.model_id
        rows = list(range(0, len(session), 97))
        np.testing.assert_array_equal(rebuilt.vectors(rows), session.vectors(rows))


# ---------------------------------------------------------------------------------- keyword parity


def test_reconstructed_tokens_are_the_indexed_ones(
    session_index: LoadedIndex, corpus_tokens: tuple[Tokenizer, list[list[str]]]
) -> None:
    _, tokens = corpus_tokens
    assert len(tokens) == len(session_index)
    doc_freq: dict[str, int] = {}
    for toks in tokens:
        for term in set(toks):
            doc_freq[term] = doc_freq.get(term, 0) + 1
    assert all(session_index.doc_freq(term) == df for term, df in doc_freq.items())


def test_keyword_backends_agree_on_the_bundled_corpus(
    tmp_path: Path, session_index: LoadedIndex, corpus_tokens: tuple[Tokenizer, list[list[str]]]
) -> None:
    """rank_bm25 and bm25s built from the same tokens rank the dev questions' top 10 alike (>= 0.9)."""
    tokenizer, tokens = corpus_tokens
    backends = {}
    for cls in (RankBM25Index, BM25sIndex):
        built = cls()
        built.build(tokens)
        built.save(tmp_path / cls.name)
        backends[cls.name] = cls.load(tmp_path / cls.name)
    aliases = AliasIndex(session_index.alias_groups)
    overlaps = []
    for q in load_questions(DEV):
        query, _ = aliases.expand_explained(tokenizer.tokenize(q.question), tokenizer, q.question)
        if not query:
            continue
        a = backends["rank_bm25"].search(query, 10)
        b = backends["bm25s"].search(query, 10)
        if session_index.keyword_backend == "rank_bm25":
            assert a == session_index.keyword_search(query, 10)
        overlaps.append(len({r for r, _ in a} & {r for r, _ in b}) / max(len(a), len(b), 1))
        scores_b = dict(b)
        for row, score in a:
            if row in scores_b:
                assert scores_b[row] == pytest.approx(score, rel=1e-4)
    print(f"\nrank_bm25 vs bm25s top-10 overlap on {len(overlaps)} dev questions: {np.mean(overlaps):.3f}")
    assert len(overlaps) >= 40
    assert np.mean(overlaps) >= 0.9


# ------------------------------------------------------------------------------- million-chunk storage


def _mapped_files() -> set[str]:
    maps = Path("/proc/self/maps").read_text(encoding="utf-8").splitlines()
    return {line.split(maxsplit=5)[5] for line in maps if len(line.split(maxsplit=5)) == 6}


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_a_scaled_index_keeps_chunks_in_sqlite_and_maps_its_arrays(
    tmp_path: Path, session_index: LoadedIndex, base_settings: Settings
) -> None:
    """A synthetic index (the corpus among distractors, 10 times its size: bm25s + HNSW) as the benchmark builds it."""
    n0 = len(session_index)
    n = 10 * n0
    settings = base_settings.model_copy(update={"vector_index": "hnsw", "hnsw_m": 16})
    figures, vectors = build_scaled_index(
        base_settings.index_dir, settings, "local", tmp_path / "index", n, seed=0,
        jieba_cache=base_settings.cache_dir / "jieba",
    )
    assert (figures["chunks"], figures["keyword_backend"], figures["vector_index"]) == (n, "bm25s", "hnsw")
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    base_vectors = session_index.vectors(range(n0))
    best = (vectors @ base_vectors.T).max(axis=0)
    np.testing.assert_allclose(best, 1.0, rtol=1e-5)  # every real chunk is among them, unchanged
    copies = ((vectors @ base_vectors.T) > 0.999).any(axis=1).sum()
    assert copies == n0  # the rest are distractors, not near-copies of the notes

    store = IndexStore(tmp_path / "index")
    tracemalloc.start()
    try:
        index = store.load()
        heap, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    with index:
        version_dir = store.versions_dir / index.version
        mapped = _mapped_files()
        assert str(version_dir / "vectors.faiss") in mapped
        keyword_arrays = {str(p) for p in (version_dir / "keyword").glob("*.npy")}
        assert keyword_arrays and keyword_arrays <= mapped
        # the loaded index holds its vocabulary, not its chunks: far less Python heap than chunk text
        chunk_text = (version_dir / SQLITE_FILE).stat().st_size
        assert heap < chunk_text / 4, (heap, chunk_text)

        original = session_index.chunks([5])[0]
        row = index.row_of(original.chunk_id)  # the real chunk, somewhere among the distractors
        assert row is not None and index.chunk_by_id(original.chunk_id).text == original.text
        np.testing.assert_array_equal(index.vectors([row])[0], vectors[row])
        assert index.dense_search(vectors[row], 1)[0][0] == row
        assert index.doc_freq("注意力") >= session_index.doc_freq("注意力")
        assert sum(1 for _ in index.all_chunks_iter(batch=1000)) == n


def test_single_queries_run_faiss_on_one_thread_in_any_thread(session_index: LoadedIndex) -> None:
    """OpenMP thread counts are per calling thread: a request thread must not fan a flat search out."""
    vector = session_index.vectors([0])[0]
    seen: list[tuple[int, int]] = []

    def request_thread() -> None:
        before = faiss.omp_get_max_threads()
        session_index.dense_search(vector, 5)
        seen.append((before, faiss.omp_get_max_threads()))

    worker = threading.Thread(target=request_thread)
    worker.start()
    worker.join()
    assert seen and seen[0][1] == 1
