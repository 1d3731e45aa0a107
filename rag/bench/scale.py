"""The retrieval section: indexes scaled up from the corpus, search latency on them, HNSW recall.

Larger indexes repeat the real chunks under new ids with perturbed real vectors and are published through
`IndexStore.publish` in a spawned child process, so the build's peak RSS is its own.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.bench.plan import ONE_MILLION, WARMUP_QUERIES, BenchPlan, Progress
from rag.bench.probes import bench_dependency, dir_mb, latency_stats, rss_mb, vm_status_mb
from rag.config import Settings

if TYPE_CHECKING:
    from rag.embedding import SentenceTransformerEmbedder

NOISE_NORM = 0.3  # expected L2 norm of the noise added to a copied vector (before renormalising)


def build_scaled_index(
    base_index_dir: Path,
    index_dir: Path,
    copies: int,
    *,
    keyword_backend: str = "auto",
    vector_index: str = "auto",
    hnsw_m: int = 32,
    hnsw_ef_search: int = 128,
    noise_norm: float = NOISE_NORM,
    seed: int = 0,
    jieba_cache: Path | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """Publish `copies` x the base index into `index_dir`; returns (figures, the vectors written).

    Copy 0 is the base itself; copy k >= 1 repeats every document and chunk under new ids
    ("x0001/<doc_id>", "<chunk_id>~1") with the same text and tokens, and each vector plus gaussian noise
    of expected norm `noise_norm`, renormalised.
    """
    from rag.index import IndexBuild, IndexStore
    from rag.text import Tokenizer
    from rag.types import Chunk, Document

    base = IndexStore(base_index_dir).load(verify=False)
    try:
        chunks = list(base.all_chunks_iter())
        n0 = len(chunks)
        vectors0 = base.vectors(range(n0))
        docs = [base.document(d["doc_id"]) for d in base.documents()]
        user_words, alias_groups = base.user_words, base.alias_groups
        embed_model_id = base.manifest.embed_model_id
        fingerprint = dict(base.manifest.settings_fingerprint)
    finally:
        base.close()
    tokenizer = Tokenizer(user_words, cache_dir=jieba_cache)
    tokens0 = [tokenizer.tokenize(c.index_text) for c in chunks]

    n = n0 * copies
    dim = vectors0.shape[1]
    rng = np.random.default_rng(seed)
    sigma = np.float32(noise_norm / math.sqrt(dim))
    vectors = np.empty((n, dim), dtype=np.float32)
    vectors[:n0] = vectors0
    all_chunks: list[Chunk] = list(chunks)
    documents: list[Document] = [d for d in docs if d is not None]
    for k in range(1, copies):
        block = vectors0 + sigma * rng.standard_normal((n0, dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        vectors[k * n0 : (k + 1) * n0] = block
        prefix = f"x{k:04d}/"
        documents.extend(
            Document(
                doc_id=prefix + d.doc_id, title=f"{d.title} ({k})", text=d.text, sha256=d.sha256,
                encoding=d.encoding, size_bytes=d.size_bytes, mtime=d.mtime,
            )
            for d in docs
            if d is not None
        )
        all_chunks.extend(
            Chunk(
                chunk_id=f"{c.chunk_id}~{k}", doc_id=prefix + c.doc_id, heading_path=c.heading_path,
                start=c.start, end=c.end, text=c.text, index_text=c.index_text, ordinal=c.ordinal,
            )
            for c in chunks
        )
    build = IndexBuild(
        documents=documents,
        chunks=all_chunks,
        vectors=vectors,
        tokens=tokens0 * copies,  # the same lists, referenced again: no per-copy token memory
        embed_model_id=embed_model_id,
        settings_fingerprint=fingerprint,
        alias_groups=alias_groups,
        user_words=user_words,
    )
    store = IndexStore(
        index_dir, keyword_backend=keyword_backend, vector_index=vector_index,
        hnsw_m=hnsw_m, hnsw_ef_search=hnsw_ef_search,
    )
    started = time.perf_counter()
    manifest = store.publish(build)
    build_seconds = time.perf_counter() - started
    del build, all_chunks, documents
    version_dir = store.versions_dir / manifest.version
    sizes = {name: 0 for name in ("sqlite", "vectors", "keyword", "other")}
    for rel, size in manifest.sizes.items():
        key = "sqlite" if rel.endswith(".sqlite") else "vectors" if rel.endswith(".faiss") else (
            "keyword" if rel.startswith("keyword/") else "other"
        )
        sizes[key] += size
    figures = {
        "chunks": n,
        "documents": manifest.counts["documents"],
        "keyword_backend": manifest.keyword_backend,
        "vector_index": manifest.vector_index,
        "build_seconds": round(build_seconds, 2),
        "disk_mb": {k: round(v / 2**20, 2) for k, v in sizes.items()} | {"total": dir_mb(version_dir)},
        "noise_norm": noise_norm if copies > 1 else 0.0,
    }
    return figures, vectors


def _scaled_child(job: dict[str, Any]) -> dict[str, Any]:
    """Child-process body: build one scaled index, then exact top-10 and HNSW recall when asked."""
    import faiss

    from rag.index import HNSW_EF_CONSTRUCTION, VECTORS_FILE, IndexStore

    baseline = vm_status_mb("VmRSS")
    figures, vectors = build_scaled_index(
        Path(job["base_index_dir"]), Path(job["index_dir"]), job["copies"],
        keyword_backend=job["keyword_backend"], vector_index=job["vector_index"], hnsw_m=job["hnsw_m"],
        hnsw_ef_search=job["hnsw_ef_search"], seed=job["seed"], jieba_cache=Path(job["jieba_cache"]),
    )
    figures["build_peak_rss_mb"] = vm_status_mb("VmHWM")
    figures["build_baseline_rss_mb"] = baseline
    if not job.get("recall"):
        return figures
    queries = np.load(job["queries"])
    base_chunks = figures["chunks"] // job["copies"]
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    _, exact = faiss.knn(queries, vectors, 10, metric=faiss.METRIC_INNER_PRODUCT)
    if figures["vector_index"] == "hnsw":
        store = IndexStore(Path(job["index_dir"]))
        path = store.versions_dir / str(store.current_version()) / VECTORS_FILE
        del vectors
        hnsw = faiss.read_index(str(path), faiss.IO_FLAG_MMAP)
        source, hnsw_seconds = "published index", figures["build_seconds"]
    else:  # the published index is exact: build an HNSW of the same vectors to measure what it would lose
        hnsw = faiss.IndexHNSWFlat(vectors.shape[1], job["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = max(HNSW_EF_CONSTRUCTION, 2 * job["hnsw_m"])
        started = time.perf_counter()
        hnsw.add(vectors)
        source, hnsw_seconds = "built in memory (published index is flat)", time.perf_counter() - started
        del vectors
    faiss.omp_set_num_threads(1)  # as served: one query at a time on one thread
    by_ef = {}
    for ef in job["ef_search"]:
        faiss.downcast_index(hnsw).hnsw.efSearch = ef
        latencies, found, passages = [], 0, []
        for q, truth in zip(queries, exact, strict=True):
            t0 = time.perf_counter()
            _, ids = hnsw.search(q.reshape(1, -1), 10)
            latencies.append((time.perf_counter() - t0) * 1000)
            found += len(set(ids[0].tolist()) & set(truth.tolist()))
            # copies of one chunk are near-ties: also count which passages (chunk texts) were found
            wanted = {int(i) % base_chunks for i in truth}
            passages.append(len(wanted & {int(i) % base_chunks for i in ids[0] if i >= 0}) / len(wanted))
        by_ef[str(ef)] = {
            "recall@10": round(found / (10 * len(queries)), 4),
            "passage_recall@10": round(float(np.mean(passages)), 4),
            "search": latency_stats(latencies),
        }
    figures["hnsw"] = {
        "chunks": figures["chunks"], "m": job["hnsw_m"], "ef_construction": max(HNSW_EF_CONSTRUCTION, 2 * job["hnsw_m"]),
        "source": source, "build_seconds": round(hnsw_seconds, 2), "queries": len(queries), "by_ef_search": by_ef,
    }
    return figures


def measure_retrieval(
    index_dir: Path,
    settings: Settings,
    embedder: SentenceTransformerEmbedder,
    questions: Sequence[str],
    jieba_cache: Path,
) -> dict[str, Any]:
    """Load a published index and time hybrid searches (uncached query embedding included)."""
    from rag.aliases import AliasIndex
    from rag.index import IndexStore
    from rag.retrieval import Retriever
    from rag.text import Tokenizer

    store = IndexStore.from_settings(settings, index_dir=index_dir)
    started = time.perf_counter()
    store.load(verify=True).close()
    verified_seconds = time.perf_counter() - started
    before = rss_mb()
    started = time.perf_counter()
    index = store.load(verify=False)
    load_seconds = time.perf_counter() - started
    try:
        tokenizer = Tokenizer(index.user_words, cache_dir=jieba_cache)
        retriever = Retriever(index, embedder, tokenizer, AliasIndex(index.alias_groups), settings)
        for query in WARMUP_QUERIES:
            retriever.search(query)
        bm25, dense, hybrid = [], [], []
        for query in questions:
            t0 = time.perf_counter()
            result = retriever.search(query, mode="hybrid")
            hybrid.append((time.perf_counter() - t0) * 1000)
            bm25.append(result.timings["bm25_ms"])
            dense.append(result.timings["dense_ms"])
        after = rss_mb()
    finally:
        index.close()
    return {
        "load_seconds": round(load_seconds, 3),
        "load_verified_seconds": round(verified_seconds, 3),
        "rss_mb_after_queries": after["rss_mb"],
        "rss_delta_mb": round(after["rss_mb"] - before["rss_mb"], 1),
        "anon_delta_mb": round(after["anon_mb"] - before["anon_mb"], 1),
        "bm25": latency_stats(bm25),
        "dense": latency_stats(dense),
        "hybrid": latency_stats(hybrid),
    }


def _feasible(previous: dict[str, Any] | None, chunks: int, where: Path) -> str | None:
    """None when a build of `chunks` should fit in disk and memory (extrapolated linearly), else why not."""
    psutil = bench_dependency("psutil")
    if previous is None:
        return None
    ratio = chunks / previous["chunks"]
    disk = previous["disk_mb"]["total"] * ratio * 2**20
    free = shutil.disk_usage(where).free
    if disk * 1.3 > free:
        return f"needs ~{disk / 2**30:.1f} GiB of disk, {free / 2**30:.1f} GiB free under {where}"
    baseline = previous["build_baseline_rss_mb"]
    memory = (baseline + (previous["build_peak_rss_mb"] - baseline) * ratio) * 2**20
    available = psutil.virtual_memory().available
    if memory > 0.8 * available:
        return f"needs ~{memory / 2**30:.1f} GiB of memory, {available / 2**30:.1f} GiB available"
    return None


def bench_scale(
    settings: Settings,
    base: Settings,
    embedder: SentenceTransformerEmbedder,
    plan: BenchPlan,
    questions: Sequence[str],
    work: Path,
    progress: Progress,
    max_chunks: int,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Retrieval figures per size, and the HNSW recall figures at the largest size built."""
    from rag.index import IndexStore

    with IndexStore(base.index_dir).load(verify=False) as index:
        n0 = len(index)
    sizes = [(f"x{m}" if m > 1 else "corpus", m) for m in plan.multipliers]
    if plan.include_million:
        sizes.append(("1M", math.ceil(ONE_MILLION / n0)))
    sizes = [(label, copies) for label, copies in sizes if copies * n0 <= max(max_chunks, n0)]
    queries = embedder.embed_queries(list(questions))
    np.save(work / "queries.npy", queries)
    rows: list[dict[str, Any]] = []
    recall: dict[str, Any] | None = None
    previous: dict[str, Any] | None = None
    for i, (label, copies) in enumerate(sizes):
        chunks = copies * n0
        reason = _feasible(previous, chunks, work)
        if reason:
            progress(f"retrieval {label}: skipped ({reason})")
            rows.append({"label": label, "copies": copies, "chunks": chunks, "skipped": reason})
            continue
        progress(f"retrieval {label}: building {chunks:,} chunks")
        index_dir = work / f"scaled-{label}"
        last = i == len(sizes) - 1
        job = {
            "base_index_dir": str(base.index_dir), "index_dir": str(index_dir), "copies": copies,
            "keyword_backend": settings.keyword_backend, "vector_index": settings.vector_index,
            "hnsw_m": settings.hnsw_m, "hnsw_ef_search": settings.hnsw_ef_search, "seed": i,
            "jieba_cache": str(work / "jieba"), "recall": last, "queries": str(work / "queries.npy"),
            "ef_search": sorted(set(plan.ef_search) | {settings.hnsw_ef_search}),
        }
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            built = pool.submit(_scaled_child, job).result()
        recall = built.pop("hnsw", recall)
        progress(f"retrieval {label}: {len(questions)} queries")
        row = {"label": label, "copies": copies, **built}
        row.update(measure_retrieval(index_dir, settings, embedder, questions, work / "jieba"))
        rows.append(row)
        previous = row
        shutil.rmtree(index_dir, ignore_errors=True)
    return rows, recall

