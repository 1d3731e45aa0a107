"""The retrieval section: the corpus among distractors at growing sizes, per index backend.

An index of n chunks holds the real chunks at random rows among n - n0 distractors (see `distractors`),
published through the backend's store (`IndexStore`, or `MilvusStore` on Milvus Lite) in a spawned child
process whose process tree's peak RSS is sampled (Milvus Lite serves from a child of its own). HNSW recall
against exact search is measured in the child where the published index is HNSW, and at the largest local
size in any case (on an HNSW built in memory when the published index is flat). The timed queries and the
dev questions' hit@5 / MRR then run in this process through the real `Retriever` (see `measure`).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.bench.measure import bench_store, measure_retrieval
from rag.bench.plan import BenchPlan, Progress, size_label
from rag.bench.probes import TreeRss, bench_dependency, dir_mb, latency_stats
from rag.config import Settings

if TYPE_CHECKING:
    from rag.embedding import SentenceTransformerEmbedder


def build_scaled_index(
    base_index_dir: Path, settings: Settings, backend: str, index_dir: Path, n: int, *, seed: int,
    jieba_cache: Path | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """Publish the base index's chunks among distractors, `n` chunks in all; returns (figures, the vectors)."""
    from rag.bench.distractors import ScaledCorpus, fit_gaussian, sample_distractors
    from rag.index import IndexBuild, IndexStore
    from rag.text import Tokenizer

    base = IndexStore(base_index_dir).load(verify=False)
    try:
        chunks = list(base.all_chunks_iter())
        n0 = len(chunks)
        vectors0 = base.vectors(range(n0))
        docs = [d for d in (base.document(d["doc_id"]) for d in base.documents()) if d is not None]
        user_words, alias_groups = base.user_words, base.alias_groups
        vector_terms, term_vectors = list(base.vector_terms), np.array(base.term_vectors)
        embed_model_id = base.manifest.embed_model_id
        fingerprint = dict(base.manifest.settings_fingerprint)
    finally:
        base.close()
    tokenizer = Tokenizer(user_words, cache_dir=jieba_cache)
    corpus = ScaledCorpus(chunks, [tokenizer.tokenize(c.index_text) for c in chunks], docs, max(n, n0), seed=seed)
    started = time.perf_counter()
    mean, chol = fit_gaussian(vectors0)
    vectors = sample_distractors(mean, chol, corpus.n, seed=seed + 2)
    vectors[corpus.real_rows] = vectors0
    sample_seconds = time.perf_counter() - started
    build = IndexBuild(
        documents=corpus.documents,  # type: ignore[arg-type]  # lazy sequences: the build never mutates them
        chunks=corpus.chunks,  # type: ignore[arg-type]
        vectors=vectors,
        tokens=corpus.tokens,  # type: ignore[arg-type]
        embed_model_id=embed_model_id,
        settings_fingerprint=fingerprint,
        alias_groups=alias_groups,
        user_words=user_words,
        vector_terms=vector_terms,
        term_vectors=term_vectors,
    )
    store = bench_store(settings, backend, index_dir)
    started = time.perf_counter()
    manifest = store.publish(build)
    build_seconds = time.perf_counter() - started
    figures = {
        "chunks": corpus.n,
        "real_chunks": n0,
        "documents": manifest.counts.get("documents"),
        "keyword_backend": manifest.keyword_backend,
        "vector_index": manifest.vector_index,
        "sample_seconds": round(sample_seconds, 2),
        "build_seconds": round(build_seconds, 2),
        "disk_mb": {"total": dir_mb(index_dir)},
    }
    return figures, vectors


def _hnsw_recall(job: dict[str, Any], figures: dict[str, Any], vectors: np.ndarray) -> dict[str, Any]:
    """recall@10 of HNSW against exact search, per efSearch, for the benchmark's query vectors."""
    import faiss

    from rag.index import HNSW_EF_CONSTRUCTION, VECTORS_FILE, IndexStore

    queries = np.load(job["queries"])
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    _, exact = faiss.knn(queries, vectors, 10, metric=faiss.METRIC_INNER_PRODUCT)
    ef_construction = max(HNSW_EF_CONSTRUCTION, 2 * job["hnsw_m"])
    if figures["vector_index"] == "hnsw":
        store = IndexStore(Path(job["index_dir"]))
        path = store.versions_dir / str(store.current_version()) / VECTORS_FILE
        hnsw = faiss.read_index(str(path), faiss.IO_FLAG_MMAP)
        source, hnsw_seconds = "published index", figures["build_seconds"]
    else:  # the published index is exact: build an HNSW of the same vectors to measure what it would lose
        hnsw = faiss.IndexHNSWFlat(vectors.shape[1], job["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = ef_construction
        started = time.perf_counter()
        hnsw.add(vectors)
        source, hnsw_seconds = "built in memory (published index is flat)", time.perf_counter() - started
    faiss.omp_set_num_threads(1)  # as served: one query at a time on one thread
    by_ef = {}
    for ef in job["ef_search"]:
        faiss.downcast_index(hnsw).hnsw.efSearch = ef
        latencies, found = [], 0
        for q, truth in zip(queries, exact, strict=True):
            t0 = time.perf_counter()
            _, ids = hnsw.search(q.reshape(1, -1), 10)
            latencies.append((time.perf_counter() - t0) * 1000)
            found += len(set(ids[0].tolist()) & set(truth.tolist()))
        by_ef[str(ef)] = {"recall@10": round(found / (10 * len(queries)), 4), "search": latency_stats(latencies)}
    return {
        "chunks": figures["chunks"], "m": job["hnsw_m"], "ef_construction": ef_construction, "source": source,
        "build_seconds": round(hnsw_seconds, 2), "queries": len(queries), "by_ef_search": by_ef,
    }


def _scaled_child(job: dict[str, Any], conn: Any) -> None:
    """Child-process body: build one scaled index, HNSW recall when asked; sends figures or an error.

    With `measure` (Milvus Lite, which one process owns, as its one serving process would) it then loads the
    embedder and sends the search figures too.
    """
    try:
        import faiss  # noqa: F401  - the libraries' own memory belongs to the baseline, not to the build

        from rag.bench.probes import vm_status_mb

        bench_store(job["settings"], job["backend"], Path(job["index_dir"]))
        baseline = vm_status_mb("VmRSS")
        embedder = None
        if job.get("measure"):  # loaded before Lite starts, and outside the measured build
            from rag.embedding import load_embedder

            embedder = load_embedder(job["settings"], dtype=job["dtype"], cache_size=0)
            embedder.embed_queries(["warm-up"])
            embedder_mb = vm_status_mb("VmRSS") - baseline
            baseline += embedder_mb
        figures, vectors = build_scaled_index(
            Path(job["base_index_dir"]), job["settings"], job["backend"], Path(job["index_dir"]), job["chunks"],
            seed=job["seed"], jieba_cache=Path(job["jieba_cache"]),
        )
        if job["backend"] == "local" and (figures["vector_index"] == "hnsw" or job["force_recall"]):
            figures["hnsw"] = _hnsw_recall(job, figures, vectors)
        del vectors
        conn.send(figures | {"build_baseline_rss_mb": baseline, "embedder_rss_mb": embedder_mb if embedder else 0.0})
        if embedder is not None:
            from rag.bench.plan import dev_questions

            store = bench_store(job["settings"], job["backend"], Path(job["index_dir"]))
            conn.send(measure_retrieval(
                store, job["settings"], embedder, job["questions"], dev_questions(), Path(job["jieba_cache"])
            ))
    except BaseException as exc:  # reported as the row's error, the run goes on
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
        raise


def _receive(conn: Any, timeout: float) -> dict[str, Any]:
    try:
        return conn.recv() if conn.poll(timeout) else {"error": f"timed out after {timeout:.0f} s"}
    except EOFError:  # the child died without a word: killed (out of memory?) or failed to start
        return {"error": "the build process died"}


def run_child(job: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run `_scaled_child` in a spawned process, sampling its process tree's RSS while it builds; kill it
    after `timeout` s. With `job["measure"]` the child's search figures are merged in."""
    ctx = get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_scaled_child, args=(job, child))
    process.start()
    child.close()
    with TreeRss(process.pid) as rss:
        figures = _receive(parent, timeout)
        # the model a Milvus child loaded before building is not the build's memory
        figures["build_peak_rss_mb"] = round(rss.peak_mb - figures.get("embedder_rss_mb", 0.0), 1)
        if job["measure"] and "error" not in figures:
            figures.update(_receive(parent, timeout))
        if "error" in figures:
            rss.kill_tree()
    process.join(60)
    if process.is_alive():
        rss.kill_tree()
    return figures


def _feasible(previous: dict[str, Any] | None, chunks: int, where: Path, budget_s: float) -> str | None:
    """None when a build of `chunks` should fit in disk, memory and time (extrapolated linearly), else why not."""
    psutil = bench_dependency("psutil")
    if previous is None:
        return None
    ratio = chunks / previous["chunks"]
    disk = previous["disk_mb"]["total"] * ratio * 2**20
    free = shutil.disk_usage(where).free
    if disk * 1.3 > free:
        return f"needs ~{disk / 2**30:.1f} GiB of disk, {free / 2**30:.1f} GiB free under {where}"
    baseline = previous.get("build_baseline_rss_mb", 0.0)  # the process before it built anything
    memory = (baseline + (previous["build_peak_rss_mb"] - baseline) * ratio) * 2**20
    available = psutil.virtual_memory().available
    if memory > 0.8 * available:
        return f"needs ~{memory / 2**30:.1f} GiB of memory, {available / 2**30:.1f} GiB available"
    seconds = previous["build_seconds"] * ratio
    if seconds > budget_s:
        return f"a build would take ~{seconds / 60:.0f} min (linear from {previous['label']}), over {budget_s / 60:.0f}"
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
    """Retrieval rows per backend and size, and the HNSW recall figures at the largest local size built."""
    from rag.bench.plan import dev_questions
    from rag.index import IndexStore

    with IndexStore(base.index_dir).load(verify=False) as index:
        n0 = len(index)
    queries = embedder.embed_queries(list(questions))
    np.save(work / "queries.npy", queries)
    dev = dev_questions()
    rows: list[dict[str, Any]] = []
    recall: dict[str, Any] | None = None
    for backend, sizes in (("local", plan.local_sizes), ("milvus", plan.milvus_sizes)):
        chunk_counts = sorted({max(size, n0) for size in sizes if size <= max(max_chunks, n0)})
        previous: dict[str, Any] | None = None
        for i, chunks in enumerate(chunk_counts):
            label = size_label(chunks, n0)
            row: dict[str, Any] = {"backend": backend, "label": label, "chunks": chunks}
            reason = _feasible(previous, chunks, work, plan.build_budget_s)
            if reason:
                progress(f"retrieval {backend} {label}: skipped ({reason})")
                rows.append(row | {"skipped": reason})
                continue
            progress(f"retrieval {backend} {label}: building {chunks:,} chunks" + (
                ", then searching in the same process" if backend == "milvus" else ""))
            index_dir = work / f"scaled-{backend}-{label}"
            job = {
                "base_index_dir": str(base.index_dir), "settings": settings, "backend": backend,
                "index_dir": str(index_dir), "chunks": chunks, "seed": 1000 + i, "jieba_cache": str(work / "jieba"),
                "force_recall": backend == "local" and i == len(chunk_counts) - 1, "queries": str(work / "queries.npy"),
                "hnsw_m": settings.hnsw_m, "ef_search": sorted(set(plan.ef_search) | {settings.hnsw_ef_search}),
                # Milvus Lite lets one process open its file: the child that built it also serves it
                "measure": backend == "milvus", "dtype": embedder.dtype, "questions": list(questions),
            }
            built = run_child(job, timeout=plan.build_budget_s * 2)
            if "error" in built:
                progress(f"retrieval {backend} {label}: failed ({built['error']})")
                rows.append(row | {"skipped": built["error"], "build_peak_rss_mb": built["build_peak_rss_mb"]})
                shutil.rmtree(index_dir, ignore_errors=True)
                continue
            hnsw = built.pop("hnsw", None)
            if hnsw is not None:
                at_ef = hnsw["by_ef_search"][str(settings.hnsw_ef_search)]
                built["hnsw_recall@10"] = at_ef["recall@10"] if hnsw["source"] == "published index" else None
                recall = hnsw
            elif backend == "local":
                built["hnsw_recall@10"] = None  # flat: exact by construction
            row.update(built)
            if backend == "local":
                progress(f"retrieval {backend} {label}: {len(questions)} timed queries, {len(dev)} dev questions")
                store = bench_store(settings, backend, index_dir)
                row.update(measure_retrieval(store, settings, embedder, questions, dev, work / "jieba"))
            rows.append(row)
            previous = row
            shutil.rmtree(index_dir, ignore_errors=True)
    return rows, recall
