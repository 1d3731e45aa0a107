"""The embedder and ingest sections of the benchmark, and the base index the retrieval section scales up."""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.bench.plan import WARMUP_QUERIES
from rag.bench.probes import latency_stats
from rag.config import Settings
from rag.types import NOTE_SUFFIXES

if TYPE_CHECKING:
    from rag.embedding import SentenceTransformerEmbedder

EDIT_TEXT = (
    "\n\n## 基准测试附注\n\n这一段是基准测试追加的文字，用来模拟修改一篇笔记。"
    "修改之后只有这篇笔记受影响的片段需要重新计算向量，其余片段的向量从缓存中读取。\n"
)


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
            (p for p in corpus.iterdir() if p.is_file() and p.suffix in NOTE_SUFFIXES),
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
        "query": latency_stats(default_threads),
        "query_1_thread": latency_stats(one_thread),
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
    notes = [p for p in files if p.suffix in NOTE_SUFFIXES]
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

