"""`rag bench`: embedder, ingest, retrieval-at-scale and HTTP benchmarks, written as JSON, PNG and Markdown.

Everything runs on real components in a temporary work directory; the configured data dir is only read
(converted model, embedding cache). Sections:

- embedder: passages/s and single-query latency per dtype (float32, bfloat16);
- ingest: full, no-change and one-note-edited runs of the corpus per dtype (the quick run ingests a few
  small notes only);
- retrieval: p50/p95 of the BM25 stage, the dense stage (query embedding, never cached, + FAISS) and the
  whole hybrid search, at the corpus size and at 10x, 100x and ~1M chunks. Larger indexes are built from
  the real chunks under new ids with perturbed real vectors (gaussian noise, renormalised), published
  through `IndexStore.publish` in a child process (so its peak RSS is its own); nothing is re-embedded;
- hnsw: recall@10 of HNSW against exact search at the largest size, per efSearch;
- http: POST /ask (extractive) against a real uvicorn server on loopback at concurrency 1, 8 and 32.

Figures are compared with the targets of the issue; they are reported, never asserted.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.config import Settings

if TYPE_CHECKING:
    from rag.embedding import SentenceTransformerEmbedder

DEFAULT_OUT_DIR = Path("benchmarks/results")
ONE_MILLION = 1_000_000
NOISE_NORM = 0.3  # expected L2 norm of the noise added to a copied vector (before renormalising)
EDIT_TEXT = (
    "\n\n## 基准测试附注\n\n这一段是基准测试追加的文字，用来模拟修改一篇笔记。"
    "修改之后只有这篇笔记受影响的片段需要重新计算向量，其余片段的向量从缓存中读取。\n"
)
WARMUP_QUERIES = ("预热查询：什么是注意力机制", "warm-up: what is gradient descent")
_REPO_EVAL = Path(__file__).resolve().parent.parent / "eval"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BenchPlan:
    """How big each section runs; `quick` keeps the whole run to about two minutes."""

    quick: bool
    embed_passages: int
    query_samples: int
    ingest_max_bytes: int | None  # None = the whole corpus
    multipliers: tuple[int, ...]
    include_million: bool
    retrieval_queries: int
    http_requests: dict[int, int]
    ef_search: tuple[int, ...]
    repeats: int  # interleaved fp32/bf16 rounds of the embedder and ingest sections; the best is reported

    @classmethod
    def for_run(cls, quick: bool) -> BenchPlan:
        """The quick (CI smoke) plan or the full plan."""
        if quick:
            return cls(True, 64, 10, 15_000, (1, 10), False, 30, {1: 10, 8: 40, 32: 64}, (16, 64), 1)
        return cls(
            False, 128, 30, None, (1, 10, 100), True, 110, {1: 40, 8: 160, 32: 320}, (16, 32, 64, 128, 256), 2
        )


# ------------------------------------------------------------------------------------------------ helpers


def _stats(values_ms: Sequence[float]) -> dict[str, float | int]:
    """p50, p95 and mean of a list of milliseconds."""
    arr = np.asarray(values_ms, dtype=np.float64)
    if arr.size == 0:
        return {"n": 0, "p50_ms": math.nan, "p95_ms": math.nan, "mean_ms": math.nan}
    p50, p95 = np.percentile(arr, [50, 95])
    return {"n": int(arr.size), "p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3),
            "mean_ms": round(float(arr.mean()), 3)}


def _peak_rss_mb() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _vm_status_mb(field: str) -> float:
    """VmRSS / VmHWM of this process image from /proc/self/status (unlike ru_maxrss, not inherited from
    the parent a spawned child was forked from); falls back to ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith(f"{field}:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return _peak_rss_mb()


def _rss_mb() -> dict[str, float]:
    """Current RSS and its anonymous part (RSS minus file-backed/shared pages such as mmapped indexes)."""
    import psutil

    info = psutil.Process().memory_info()
    shared = getattr(info, "shared", 0)
    return {"rss_mb": round(info.rss / 2**20, 1), "anon_mb": round((info.rss - shared) / 2**20, 1)}


def _dir_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 2)


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, bf16 support, load average and library versions of this machine."""
    import faiss
    import psutil
    import torch

    from rag.embedding import cpu_supports_bf16

    model = "unknown"
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        model = platform.processor() or "unknown"
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "bf16_native": cpu_supports_bf16(),
        "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "thread_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")},
    }


def bench_questions(corpus_texts: Sequence[str] = ()) -> list[str]:
    """Real questions: eval/dev.jsonl then eval/calibration.jsonl when present, else heading-like texts."""
    questions: list[str] = []
    for name in ("dev.jsonl", "calibration.jsonl"):
        path = _REPO_EVAL / name
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    questions.append(str(json.loads(line)["question"]))
    if not questions:
        questions = [t.split("\n", 1)[0][:60] for t in corpus_texts if t.strip()][:110]
    return list(dict.fromkeys(questions))


def unique_texts(questions: Sequence[str], start: int, count: int) -> list[str]:
    """`count` distinct request texts: the questions in turn, numbered once they repeat (no cache hits)."""
    out = []
    for i in range(start, start + count):
        q = questions[i % len(questions)]
        out.append(q if i < len(questions) else f"{q}（{i // len(questions)}）")
    return out


def _load_embedder(settings: Settings, dtype: str) -> tuple[SentenceTransformerEmbedder, float]:
    """The configured model in `dtype` without a query cache (every query is embedded); load seconds."""
    from rag.embedding import load_embedder

    started = time.perf_counter()
    embedder = load_embedder(settings, dtype=dtype, cache_size=0)
    return embedder, time.perf_counter() - started


def _data_dir(settings: Settings, path: Path, **updates: Any) -> Settings:
    """Settings for a fresh data dir under the work dir that shares the converted model."""
    (path / "cache").mkdir(parents=True, exist_ok=True)
    if settings.models_dir.is_dir() and not (path / "models").exists():
        os.symlink(settings.models_dir.resolve(), path / "models")
    return settings.model_copy(update={"data_dir": path, **updates})


def _copy_notes(corpus: Path, dest: Path, max_bytes: int | None) -> list[Path]:
    """A writable copy of the corpus (or of its smallest top-level notes up to `max_bytes`)."""
    if max_bytes is None:
        shutil.copytree(corpus, dest, copy_function=shutil.copyfile)
    else:
        dest.mkdir(parents=True)
        notes = sorted(
            (p for p in corpus.iterdir() if p.is_file() and p.suffix in {".md", ".markdown", ".txt"}),
            key=lambda p: (p.stat().st_size, p.name),
        )
        total = 0
        for note in notes:
            size = note.stat().st_size
            if total and total + size > max_bytes:
                break
            shutil.copyfile(note, dest / note.name)
            total += size
    return sorted(p for p in dest.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------------------------- embedder


def sample_passages(settings: Settings, count: int) -> list[str]:
    """`count` chunk texts (what the embedder sees at ingest) spread evenly over the corpus."""
    from ingest.chunking import chunk_document
    from ingest.loading import discover

    documents, _ = discover(settings.corpus_dir, settings.max_file_mb)
    texts = [
        c.index_text
        for d in documents
        for c in chunk_document(d, settings.chunk_size, settings.chunk_overlap)
    ]
    if not texts:
        raise ValueError(f"no notes to benchmark in {settings.corpus_dir}")
    picks = np.linspace(0, len(texts) - 1, num=min(count, len(texts))).round().astype(int)
    return [texts[i] for i in picks]


def bench_embedder(
    embedder: SentenceTransformerEmbedder, passages: Sequence[str], queries: Sequence[str]
) -> dict[str, Any]:
    """Passages/s over `passages` and per-query latency over `queries` (each embedded, never cached)."""
    embedder.embed_passages(list(passages[:8]))  # warm-up: first calls allocate
    embedder.embed_queries([WARMUP_QUERIES[0]])
    started = time.perf_counter()
    embedder.embed_passages(list(passages))
    seconds = time.perf_counter() - started
    import torch

    def query_latencies(suffix: str) -> list[float]:
        latencies = []
        for query in queries:
            t0 = time.perf_counter()
            embedder.embed_queries([query + suffix])
            latencies.append((time.perf_counter() - t0) * 1000)
        return latencies

    default_threads = query_latencies("")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one_thread = query_latencies(" ")  # a different text, should a cache ever be in the way
    finally:
        torch.set_num_threads(threads)
    return {
        "passages": len(passages),
        "passages_per_s": round(len(passages) / seconds, 2),
        "torch_threads": threads,
        "query": _stats(default_threads),
        "query_1_thread": _stats(one_thread),
    }


# ------------------------------------------------------------------------------------------------- ingest


def bench_ingest(
    settings: Settings, embedder: SentenceTransformerEmbedder, work: Path, max_bytes: int | None
) -> dict[str, Any]:
    """Full (empty cache), no-change and one-note-edited ingests of a copy of the corpus."""
    from ingest.pipeline import run_ingest

    corpus = work / "corpus"
    files = _copy_notes(settings.corpus_dir, corpus, max_bytes)
    run_settings = _data_dir(settings, work / "data", corpus_dir=corpus, embed_dtype=embedder.dtype)

    def figures(summary: Any) -> dict[str, Any]:
        seconds = summary.seconds
        return {
            "seconds": round(seconds, 3),
            "embed_seconds": round(summary.embed_seconds, 3),
            "chunks": summary.chunks,
            "embedded": summary.embedded,
            "published": summary.published,
            "chunks_per_s": round(summary.chunks / seconds, 2) if seconds > 0 else math.nan,
            "embed_passages_per_s": (
                round(summary.embedded / summary.embed_seconds, 2) if summary.embedded else None
            ),
            "outside_embedder_share": round(1 - summary.embed_seconds / seconds, 4) if seconds > 0 else math.nan,
        }

    full = run_ingest(run_settings, full=True, embedder=embedder)
    same = run_ingest(run_settings)  # no embedder given: the CLI path, which must not load the model
    notes = [p for p in files if p.suffix in {".md", ".markdown", ".txt"}]
    edited_note = min(notes, key=lambda p: (p.stat().st_size, p.name))
    with edited_note.open("a", encoding="utf-8") as f:
        f.write(EDIT_TEXT)
    edited = run_ingest(run_settings, embedder=embedder)
    return {
        "notes": len(notes),
        "corpus_bytes": sum(p.stat().st_size for p in notes),
        "subset": max_bytes is not None,
        "full": figures(full),
        "no_change": figures(same),
        "edited": {**figures(edited), "note": edited_note.name},
    }


def ingest_base(
    settings: Settings, embedder: SentenceTransformerEmbedder, work: Path, seed_caches: Sequence[Path]
) -> Settings:
    """The corpus ingested into a work data dir (vectors from the given caches where they hold them)."""
    from ingest.pipeline import run_ingest

    base = _data_dir(settings, work / "base", embed_dtype=embedder.dtype)
    target = base.cache_dir / "embeddings.sqlite"
    for cache in seed_caches:
        if cache.is_file():
            shutil.copyfile(cache, target)
            break
    run_ingest(base, embedder=embedder)
    return base


# ---------------------------------------------------------------------------------------- scaled indexes


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
    from rag.store import IndexBuild, IndexStore
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
        "disk_mb": {k: round(v / 2**20, 2) for k, v in sizes.items()} | {"total": _dir_mb(version_dir)},
        "noise_norm": noise_norm if copies > 1 else 0.0,
    }
    return figures, vectors


def _scaled_child(job: dict[str, Any]) -> dict[str, Any]:
    """Child-process body: build one scaled index, then exact top-10 and HNSW recall when asked."""
    import faiss

    from rag.store import HNSW_EF_CONSTRUCTION, VECTORS_FILE, IndexStore

    baseline = _vm_status_mb("VmRSS")
    figures, vectors = build_scaled_index(
        Path(job["base_index_dir"]), Path(job["index_dir"]), job["copies"],
        keyword_backend=job["keyword_backend"], vector_index=job["vector_index"], hnsw_m=job["hnsw_m"],
        hnsw_ef_search=job["hnsw_ef_search"], seed=job["seed"], jieba_cache=Path(job["jieba_cache"]),
    )
    figures["build_peak_rss_mb"] = _vm_status_mb("VmHWM")
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
            "search": _stats(latencies),
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
    from ingest.glossary import AliasIndex
    from rag.retrieval import Retriever
    from rag.store import IndexStore
    from rag.text import Tokenizer

    store = IndexStore(
        index_dir, keyword_backend=settings.keyword_backend, vector_index=settings.vector_index,
        hnsw_m=settings.hnsw_m, hnsw_ef_search=settings.hnsw_ef_search,
    )
    started = time.perf_counter()
    store.load(verify=True).close()
    verified_seconds = time.perf_counter() - started
    before = _rss_mb()
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
        after = _rss_mb()
    finally:
        index.close()
    return {
        "load_seconds": round(load_seconds, 3),
        "load_verified_seconds": round(verified_seconds, 3),
        "rss_mb_after_queries": after["rss_mb"],
        "rss_delta_mb": round(after["rss_mb"] - before["rss_mb"], 1),
        "anon_delta_mb": round(after["anon_mb"] - before["anon_mb"], 1),
        "bm25": _stats(bm25),
        "dense": _stats(dense),
        "hybrid": _stats(hybrid),
    }


def _feasible(previous: dict[str, Any] | None, chunks: int, where: Path) -> str | None:
    """None when a build of `chunks` should fit in disk and memory (extrapolated linearly), else why not."""
    import psutil

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
    from rag.store import IndexStore

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


# --------------------------------------------------------------------------------------------------- http


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(settings_file: Path, port: int) -> None:
    """Child-process body of the HTTP benchmark: the API for the settings in `settings_file`."""
    import uvicorn

    from rag.api import create_app

    settings = Settings(_env_file=None, **json.loads(settings_file.read_text(encoding="utf-8")))
    uvicorn.run(create_app(settings), host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def _drive(url: str, texts: Sequence[str], concurrency: int) -> dict[str, Any]:
    """POST every text to /ask with `concurrency` clients in flight; latency, throughput, errors."""
    import httpx

    latencies: list[float] = []
    errors = refused = 0
    pending = iter(texts)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120.0, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors, refused
            for text in pending:
                t0 = time.perf_counter()
                try:
                    response = await client.post("/ask", json={"question": text})
                    ok = response.status_code == 200
                    if ok and response.json().get("refused"):
                        refused += 1
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - t0) * 1000)
                errors += 0 if ok else 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {
        "requests": len(texts),
        "errors": errors,
        "refused": refused,
        "requests_per_s": round(len(texts) / wall, 2),
        **_stats(latencies),
    }


def bench_http(base: Settings, plan: BenchPlan, questions: Sequence[str], work: Path) -> dict[str, Any]:
    """Start `python -m rag.bench serve` on loopback and load it at each planned concurrency."""
    import httpx

    values = base.model_dump(mode="json") | {"api_key": None, "llm_api_key": None, "llm_model": None}
    settings_file = work / "server-settings.json"
    settings_file.write_text(json.dumps(values), encoding="utf-8")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = work / "server.log"
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with log_path.open("wb") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "rag.bench", "serve", str(settings_file), str(port)],
            cwd=work, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )
    try:
        started = time.perf_counter()
        while True:
            if server.poll() is not None:
                tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
                raise RuntimeError(f"benchmark server exited with {server.returncode}:\n{tail}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - started > 300:
                raise RuntimeError("benchmark server not ready after 300 s")
            time.sleep(0.25)
        startup = time.perf_counter() - started
        asyncio.run(_drive(url, list(WARMUP_QUERIES), 1))
        figures: dict[str, Any] = {"server_startup_seconds": round(startup, 2)}
        offset = 0
        for concurrency, count in plan.http_requests.items():
            texts = unique_texts(questions, offset, count)
            offset += count
            figures[str(concurrency)] = {"concurrency": concurrency, **asyncio.run(_drive(url, texts, concurrency))}
        return figures
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# ------------------------------------------------------------------------------------------------ targets


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets with the measured value and whether it was met (None = not measured)."""
    dtype = results["settings"]["embed_dtype"]
    ingest = results.get("ingest", {})
    retrieval = {row["label"]: row for row in results.get("retrieval", []) if "hybrid" in row}
    http = results.get("http", {})
    native = results["machine"]["bf16_native"]

    def get(mapping: Any, *keys: str) -> Any:
        for key in keys:
            if not isinstance(mapping, dict) or key not in mapping:
                return None
            mapping = mapping[key]
        return mapping

    fp32 = get(ingest, "float32", "full", "seconds")
    bf16 = get(ingest, "bfloat16", "full", "seconds")
    rows = [
        ("full ingest speed-up bf16 vs fp32", fp32 / bf16 if fp32 and bf16 else None, ">=", 2.5, "x",
         "where bf16 is native" + ("" if native else " (not native here: not applicable)")),
        ("full ingest time outside the embedder", get(ingest, dtype, "full", "outside_embedder_share"),
         "<=", 0.20, "share", dtype),
        ("no-change re-ingest", get(ingest, dtype, "no_change", "seconds"), "<=", 2.0, "s", dtype),
        ("hybrid p95 at the corpus size", get(retrieval, "corpus", "hybrid", "p95_ms"), "<=", 30.0, "ms",
         "incl. query embedding"),
        ("hybrid p95 at 1M chunks", get(retrieval, "1M", "hybrid", "p95_ms"), "<=", 150.0, "ms",
         "incl. query embedding"),
        ("/ask p95 at concurrency 1", get(http, "1", "p95_ms"), "<=", 100.0, "ms", "extractive"),
        ("/ask throughput at concurrency 8", get(http, "8", "requests_per_s"), ">=", 20.0, "req/s", ""),
        ("/ask errors at concurrency 32", get(http, "32", "errors"), "<=", 0, "errors", ""),
    ]
    out = []
    for name, value, op, target, unit, note in rows:
        met = None
        if value is not None and not (name.startswith("full ingest speed-up") and not native):
            met = bool(value >= target) if op == ">=" else bool(value <= target)
        out.append({
            "name": name, "value": None if value is None else round(float(value), 3), "op": op,
            "target": target, "unit": unit, "met": met, "note": note,
        })
    return out


# ----------------------------------------------------------------------------------------------- reports


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return "—" if not math.isfinite(value) else f"{value:,.{digits}f}"
    return str(value)


def summary_tables(results: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table of the report; shared by the CLI and the Markdown file."""
    tables = []
    emb = results.get("embedder", {})
    rows = [
        [dtype, _fmt(v["load_seconds"], 2), _fmt(v["passages"]), _fmt(v["passages_per_s"]),
         f"{_fmt(v['query']['p50_ms'])} / {_fmt(v['query']['p95_ms'])}",
         f"{_fmt(v['query_1_thread']['p50_ms'])} / {_fmt(v['query_1_thread']['p95_ms'])}"]
        for dtype, v in emb.items() if isinstance(v, dict)
    ]
    threads = next((v["torch_threads"] for v in emb.values() if isinstance(v, dict)), "?")
    tables.append((
        "Embedder",
        ["dtype", "load s", "passages", "passages/s", f"query ms p50 / p95 ({threads} threads)",
         "query ms p50 / p95 (1 thread)"],
        rows,
    ))

    rows = []
    for dtype, v in results.get("ingest", {}).items():
        if not isinstance(v, dict) or "full" not in v:
            continue
        for run in ("full", "no_change", "edited"):
            r = v[run]
            rows.append([
                dtype, run.replace("_", " "), _fmt(r["seconds"], 2), _fmt(r["chunks"]), _fmt(r["embedded"]),
                _fmt(r["chunks_per_s"]), _fmt(r["embed_passages_per_s"]),
                _fmt(100 * r["outside_embedder_share"]) + " %",
            ])
    tables.append((
        "Ingest", ["dtype", "run", "seconds", "chunks", "embedded", "chunks/s", "embed passages/s",
                   "outside embedder"], rows,
    ))

    rows = []
    for r in results.get("retrieval", []):
        if "skipped" in r:
            rows.append([r["label"], _fmt(r["chunks"]), "skipped: " + r["skipped"]] + [""] * 9)
            continue
        rows.append([
            r["label"], _fmt(r["chunks"]), f"{r['keyword_backend']} + {r['vector_index']}",
            f"{_fmt(r['bm25']['p50_ms'])} / {_fmt(r['bm25']['p95_ms'])}",
            f"{_fmt(r['dense']['p50_ms'])} / {_fmt(r['dense']['p95_ms'])}",
            f"{_fmt(r['hybrid']['p50_ms'])} / {_fmt(r['hybrid']['p95_ms'])}",
            _fmt(r["build_seconds"]), _fmt(r["disk_mb"]["total"]), _fmt(r["build_peak_rss_mb"], 0),
            _fmt(r["load_seconds"], 2), _fmt(r["load_verified_seconds"], 2), _fmt(r["anon_delta_mb"]),
        ])
    tables.append((
        "Retrieval (ms: p50 / p95)",
        ["size", "chunks", "backends", "bm25", "dense", "hybrid", "build s", "disk MB", "build peak RSS MB",
         "load s", "load+verify s", "anon RSS +MB"],
        rows,
    ))

    hnsw = results.get("hnsw")
    if hnsw:
        rows = [
            [ef, _fmt(v["recall@10"], 3), _fmt(v["passage_recall@10"], 3), _fmt(v["search"]["p50_ms"], 2),
             _fmt(v["search"]["p95_ms"], 2)]
            for ef, v in hnsw["by_ef_search"].items()
        ]
        title = (f"HNSW vs exact at {hnsw['chunks']:,} chunks (M={hnsw['m']}, efConstruction="
                 f"{hnsw['ef_construction']}, {hnsw['source']}, built in {hnsw['build_seconds']} s)")
        tables.append((
            title, ["efSearch", "recall@10 (ids)", "recall@10 (passages)", "FAISS p50 ms", "FAISS p95 ms"], rows
        ))

    http = results.get("http", {})
    rows = [
        [str(v["concurrency"]), _fmt(v["requests"]), _fmt(v["p50_ms"]), _fmt(v["p95_ms"]),
         _fmt(v["requests_per_s"]), _fmt(v["errors"]), _fmt(v["refused"])]
        for v in http.values() if isinstance(v, dict)
    ]
    tables.append(("POST /ask (extractive, loopback)",
                   ["concurrency", "requests", "p50 ms", "p95 ms", "req/s", "errors", "refused"], rows))

    rows = [
        [t["name"], _fmt(t["value"], 3) + f" {t['unit']}", f"{t['op']} {t['target']} {t['unit']}",
         {True: "met", False: "missed", None: "not measured"}[t["met"]], t["note"]]
        for t in results.get("targets", [])
    ]
    tables.append(("Targets", ["figure", "value", "target", "status", "note"], rows))
    return tables


def machine_line(results: dict[str, Any]) -> str:
    """One line naming the machine and how busy it was while the benchmark ran."""
    m = results["machine"]
    loads = [x[1] for x in m.get("loadavg_by_stage", [])] or [math.nan]
    return (
        f"{m['cpu']}, {m['cores']} cores, {m['ram_gb']} GiB RAM, bf16 native: {_fmt(m['bf16_native'])} "
        f"({', '.join(m['cpu_flags'])}); 1-minute load average over the stages {min(loads):.2f}–"
        f"{max(loads):.2f} (start {m['loadavg_start']}, end {m.get('loadavg_end')}); Python {m['python']}, "
        f"torch {m['torch']}, faiss {m['faiss']}"
    )


def to_markdown(results: dict[str, Any]) -> str:
    """The report as Markdown tables (for benchmarks/results/latest.md and the README)."""
    meta = results["meta"]
    s = results["settings"]
    lines = [
        f"# Benchmark ({'quick' if meta['quick'] else 'full'} run, {meta['finished_at']})",
        "",
        f"Machine: {machine_line(results)}.",
        "",
        f"Settings: embed dtype {s['embed_dtype']} (setting {s['embed_dtype_setting']}), keyword backend "
        f"{s['keyword_backend']}, vector index {s['vector_index']} (HNSW M={s['hnsw_m']}, efSearch="
        f"{s['hnsw_ef_search']}), top_k {s['top_k']}, candidates {s['candidates']}. Total "
        f"{meta['seconds']:.0f} s, peak RSS of the benchmark process {meta['peak_rss_mb']:.0f} MB.",
        "",
        "Retrieval: *bm25* and *dense* are the two stages inside a hybrid search (bm25 = tokenise, expand "
        "aliases, BM25 top-N; dense = embed the query, never cached, + FAISS top-N); *hybrid* is the whole "
        "`Retriever.search` incl. fusion, chunk fetch from SQLite, merging and the relevance gate. Sizes "
        "above the corpus repeat its chunks under new ids with perturbed vectors (noise norm "
        f"{NOISE_NORM}); as every chunk has many near-identical copies, HNSW recall is given both by id "
        "(against exact search) and by passage (a copy of the same chunk counts as found).",
        "",
        f"Embedder and ingest: fp32 and bf16 take turns for {meta.get('repeats', 1)} round(s); the best "
        "round of each is shown (all rounds are in the JSON). Query latency is per single query, never cached.",
        "",
    ]
    for title, header, rows in summary_tables(results):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Retrieval latency (p95 solid, p50 dashed) against corpus size, one line per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results.get("retrieval", []) if "hybrid" in r]
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    for mode, color in (("bm25", "tab:blue"), ("dense", "tab:orange"), ("hybrid", "tab:green")):
        xs = [r["chunks"] for r in rows]
        ax.plot(xs, [r[mode]["p95_ms"] for r in rows], marker="o", color=color, label=f"{mode} p95")
        ax.plot(xs, [r[mode]["p50_ms"] for r in rows], ls="--", marker=".", color=color, alpha=0.6,
                label=f"{mode} p50")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("chunks in the index")
    ax.set_ylabel("latency per query (ms)")
    ax.set_title(f"Retrieval latency vs corpus size\n{results['machine']['cpu']}, "
                 f"{results['machine']['cores']} cores, embed {results['settings']['embed_dtype']}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_reports(results: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """Write <name>.json, <name>.png and <name>.md (name: latest, or quick for --quick) into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "quick" if results["meta"]["quick"] else "latest"
    paths = {kind: out_dir / f"{name}.{kind}" for kind in ("json", "png", "md")}
    results["files"] = {kind: str(p) for kind, p in paths.items()}
    png_tmp = paths["png"].with_name(paths["png"].name + ".tmp.png")
    plot(results, png_tmp)
    os.replace(png_tmp, paths["png"])
    _write_atomic(paths["md"], to_markdown(results).encode("utf-8"))
    _write_atomic(paths["json"], json.dumps(results, ensure_ascii=False, indent=2).encode("utf-8"))
    return results["files"]


# ---------------------------------------------------------------------------------------------------- run


def run_bench(
    settings: Settings,
    *,
    quick: bool = False,
    out_dir: Path = DEFAULT_OUT_DIR,
    progress: Progress | None = None,
    max_chunks: int = ONE_MILLION + 10_000,
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """Run every section, write the reports into `out_dir`, return the results."""
    from rag.embedding import resolve_dtype

    loads: list[list[Any]] = []

    def say(message: str) -> None:  # also samples the load average: other work on the machine skews figures
        loads.append([message, round(os.getloadavg()[0], 2)])
        if progress is not None:
            progress(message)

    plan = BenchPlan.for_run(quick)
    started = time.perf_counter()
    dtype = resolve_dtype(settings.embed_dtype)
    results: dict[str, Any] = {
        "meta": {"quick": quick, "repeats": plan.repeats, "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "machine": machine_info(),
        "settings": {
            "embed_dtype": dtype, "embed_dtype_setting": settings.embed_dtype,
            "embed_model_id": None, "keyword_backend": settings.keyword_backend,
            "vector_index": settings.vector_index, "hnsw_m": settings.hnsw_m,
            "hnsw_ef_search": settings.hnsw_ef_search, "top_k": settings.top_k,
            "candidates": settings.candidates, "embed_batch_size": settings.embed_batch_size,
        },
    }
    with tempfile.TemporaryDirectory(prefix="rag-bench-", dir=work_dir) as tmp:
        work = Path(tmp)
        passages = sample_passages(settings, plan.embed_passages)
        questions = bench_questions(passages)
        dtypes = ("float32", "bfloat16")
        embedders: dict[str, SentenceTransformerEmbedder] = {}
        load_seconds: dict[str, float] = {}
        for each in dtypes:
            say(f"embedder {each}: loading")
            embedders[each], load_seconds[each] = _load_embedder(settings, each)
        # fp32 and bf16 take turns, `repeats` rounds; the best round of each is reported (other processes
        # on the machine only ever slow a run down) and every round is kept in the JSON
        emb_runs: dict[str, list[dict[str, Any]]] = {d: [] for d in dtypes}
        ingest_runs: dict[str, list[dict[str, Any]]] = {d: [] for d in dtypes}
        for round_ in range(plan.repeats):
            for each in dtypes:
                say(f"embedder {each}: {len(passages)} passages, {plan.query_samples} queries (round {round_ + 1})")
                emb_runs[each].append(bench_embedder(embedders[each], passages, questions[: plan.query_samples]))
            for each in dtypes:
                say(f"ingest {each} (round {round_ + 1})")
                ingest_runs[each].append(
                    bench_ingest(settings, embedders[each], work / f"ingest-{each}-{round_}", plan.ingest_max_bytes)
                )
        results["embedder"] = {}
        results["ingest"] = {}
        for each in dtypes:
            best = max(emb_runs[each], key=lambda r: r["passages_per_s"])
            results["embedder"][each] = {
                "load_seconds": round(load_seconds[each], 2), **best,
                "passages_per_s_rounds": [r["passages_per_s"] for r in emb_runs[each]],
            }
            best = min(ingest_runs[each], key=lambda r: r["full"]["seconds"])
            results["ingest"][each] = {**best, "full_seconds_rounds": [r["full"]["seconds"] for r in ingest_runs[each]]}
        for each in dtypes:
            if each != dtype:  # keep one model in memory from here on
                del embedders[each]
        e = results["embedder"]
        e["bf16_speedup"] = round(e["bfloat16"]["passages_per_s"] / e["float32"]["passages_per_s"], 2)
        embedder = embedders[dtype]
        results["settings"]["embed_model_id"] = embedder.model_id

        say("retrieval: base index of the corpus")
        seeds = [settings.cache_dir / "embeddings.sqlite"]
        if not plan.ingest_max_bytes:
            seeds.insert(0, work / f"ingest-{dtype}-0" / "data" / "cache" / "embeddings.sqlite")
        base = ingest_base(settings, embedder, work, seeds)
        results["retrieval"], results["hnsw"] = bench_scale(
            settings, base, embedder, plan, questions[: plan.retrieval_queries], work, say, max_chunks
        )
        say("http: /ask at concurrency " + ", ".join(map(str, plan.http_requests)))
        results["http"] = bench_http(base, plan, questions, work)

    results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["machine"]["loadavg_by_stage"] = loads
    results["meta"]["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results["meta"]["seconds"] = round(time.perf_counter() - started, 1)
    results["meta"]["peak_rss_mb"] = _peak_rss_mb()
    results["targets"] = evaluate_targets(results)
    write_reports(results, out_dir)
    return results


if __name__ == "__main__":  # `python -m rag.bench serve <settings.json> <port>`: the HTTP benchmark's server
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        _serve(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit("usage: python -m rag.bench serve <settings.json> <port>")
