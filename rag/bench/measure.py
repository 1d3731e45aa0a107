"""Search on a published (scaled) index through the real `Retriever`: latency, dev hit@5 / MRR, memory."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.bench.plan import WARMUP_QUERIES
from rag.bench.probes import latency_stats, rss_mb, tree_rss_mb
from rag.config import Settings

if TYPE_CHECKING:
    from rag.embedding import SentenceTransformerEmbedder
    from rag.evaluation import EvalQuestion


def bench_store(settings: Settings, backend: str, index_dir: Path) -> Any:
    """The store of `backend` ("local" or "milvus": Milvus Lite in index_dir/milvus.db) over `index_dir`."""
    settings = settings.model_copy(update={"index_backend": backend, "milvus_uri": None})
    from rag.index.backends import open_store

    return open_store(settings, index_dir=index_dir)


def dev_quality(retriever: Any, dev: Sequence[EvalQuestion]) -> dict[str, Any]:
    """hit@5 and MRR@10 of the answerable dev questions, scored as `rag eval` scores them (top 10, gold)."""
    from rag.evaluation import is_hit

    ranks = []
    for q in dev:
        if not q.answerable or not q.gold:
            continue
        hits = retriever.search(q.question, top_k=10, mode="hybrid").hits
        ranks.append(next((h.rank for h in hits if is_hit(h.chunk.text, q.gold)), None))
    if not ranks:
        return {"dev_questions": 0, "hit@5": None, "mrr@10": None}
    return {
        "dev_questions": len(ranks),
        "hit@5": round(sum(1 for r in ranks if r is not None and r <= 5) / len(ranks), 4),
        "mrr@10": round(sum(1 / r for r in ranks if r is not None and r <= 10) / len(ranks), 4),
    }


def measure_retrieval(
    store: Any,
    settings: Settings,
    embedder: SentenceTransformerEmbedder,
    questions: Sequence[str],
    dev: Sequence[EvalQuestion],
    jieba_cache: Path,
) -> dict[str, Any]:
    """Load a published index, time hybrid searches (uncached query embedding included), score dev.

    Memory while serving: this process's RSS growth from before the load to after the queries, plus the RSS its
    child processes (a Milvus Lite server) gained.
    """
    from rag.aliases import AliasIndex
    from rag.retrieval import Retriever
    from rag.text import Tokenizer

    started = time.perf_counter()
    store.load(verify=True).close()
    verified_seconds = time.perf_counter() - started
    before, children_before = rss_mb(), tree_rss_mb(None)
    started = time.perf_counter()
    index = store.load(verify=False)
    load_seconds = time.perf_counter() - started
    try:
        tokenizer = Tokenizer(index.user_words, cache_dir=jieba_cache)
        retriever = Retriever(index, embedder, tokenizer, AliasIndex(index.alias_groups), settings)
        for query in WARMUP_QUERIES:
            retriever.search(query)
        for query in questions[:10]:  # a freshly loaded model's first calls are several times slower
            embedder.embed_queries([query])
        bm25, dense, hybrid = [], [], []
        for query in questions:
            t0 = time.perf_counter()
            result = retriever.search(query, mode="hybrid")
            hybrid.append((time.perf_counter() - t0) * 1000)
            bm25.append(result.timings["bm25_ms"])
            dense.append(result.timings["dense_ms"])
        quality = dev_quality(retriever, dev)
        after = rss_mb()
        children = round(tree_rss_mb(None) - children_before, 1)
    finally:
        index.close()
    return {
        "load_seconds": round(load_seconds, 3),
        "load_verified_seconds": round(verified_seconds, 3),
        "rss_mb_after_queries": after["rss_mb"],
        "rss_delta_mb": round(after["rss_mb"] - before["rss_mb"], 1),
        "anon_delta_mb": round(after["anon_mb"] - before["anon_mb"], 1),
        "children_rss_mb": children,
        "serve_rss_mb": round(after["rss_mb"] - before["rss_mb"] + children, 1),
        "bm25": latency_stats(bm25),
        "dense": latency_stats(dense),
        "hybrid": latency_stats(hybrid),
        **quality,
    }
