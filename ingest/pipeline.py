"""Incremental, atomic ingest: corpus -> chunks -> tokens + vectors -> a new published index.

The previous index keeps serving until the store's `publish` switches to the new one; a run killed at any
stage leaves it untouched, and the embedding cache keeps whatever vectors were already computed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ingest.cache import EmbeddingCache, text_key
from ingest.chunking import chunk_document, heading_texts
from ingest.converters import converter_versions
from ingest.converters.graph import alias_groups as front_matter_aliases
from ingest.converters.graph import resolve_links
from ingest.converters.service import ConversionService
from ingest.corpus import GLOSSARY_FILE
from ingest.glossary import apply_removals, extract_alias_groups, heading_terms, read_user_glossary
from ingest.loading import discover
from rag.aliases import merge_groups
from rag.answer.reader import reader_texts
from rag.config import Settings
from rag.crosslingual import bridge_terms
from rag.embedding import MAX_BATCH_SIZE, Embedder, load_embedder
from rag.errors import IngestFailed
from rag.index import IndexBackend, IndexBuild, WriteLock, open_store
from rag.text import Tokenizer, is_cjk
from rag.types import Chunk, Document, SkippedFile

log = logging.getLogger(__name__)

# Bump when tokenization, chunking or the stored glossary change meaning, so an old index is rebuilt rather than mixed.
PIPELINE_VERSION = 5  # 2: plural-tolerant glossary matching, bridge term vectors; 3-4: reader sentence vectors; 5: numbered list items quoted

Progress = Callable[[str, int, int], None]  # (stage, done, total)
StageHook = Callable[[str], None]  # called on entering each stage; tests use it to inject faults


@dataclass
class IngestSummary:
    """What an ingest did; printed by the CLI and returned by the API's ingest job."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    documents: int = 0
    chunks: int = 0
    embedded: int = 0
    reused: int = 0
    alias_groups: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0
    version: str | None = None
    published: bool = False

    def to_dict(self) -> dict:
        data = asdict(self)
        data["skipped"] = [{"path": s.path, "reason": s.reason} for s in self.skipped]
        return data


def fingerprint(settings: Settings, embed_model_id: str) -> dict:
    """The settings an index depends on; a difference forces a rebuild of everything derived from them
    (vectors come from the embedding cache when only the index structure changed)."""
    return {
        "pipeline_version": PIPELINE_VERSION,
        "chunk_size": settings.chunk_size,
        "chunk_overlap": settings.chunk_overlap,
        "embed_model_id": embed_model_id,
        "keyword_backend": settings.keyword_backend,
        "vector_index": settings.vector_index,
        "hnsw_m": settings.hnsw_m,
        "converters": converter_versions(),  # a new converter version re-reads its format (cached by bytes)
    }


def embed_model_id_for(settings: Settings) -> str:
    """The embedder id (incl. dtype) without loading the model, so a no-change ingest stays fast."""
    from rag.embedding import model_id_for

    return model_id_for(settings)


def run_ingest(
    settings: Settings,
    *,
    full: bool = False,
    corpus_dir: Path | None = None,
    progress: Progress | None = None,
    embedder: Embedder | None = None,
    on_stage: StageHook | None = None,
    lock_timeout: float = 0.0,
) -> IngestSummary:
    """Ingest the corpus into a new index version and publish it atomically.

    Nothing changed (same files, same settings) and not `full` -> no new version is written.
    Raises IngestBusy when another ingest holds the lock, IngestFailed on a write failure.
    """
    started = time.perf_counter()
    corpus = (corpus_dir or settings.corpus_dir).resolve()
    if not corpus.is_dir():
        raise IngestFailed(f"corpus directory not found: {corpus}")
    report = progress or (lambda stage, done, total: None)
    stage = on_stage or (lambda name: None)
    store = open_store(settings)
    settings.index_dir.mkdir(parents=True, exist_ok=True)
    with WriteLock(settings.index_dir, timeout=lock_timeout):
        store.cleanup_debris()
        summary = IngestSummary()

        stage("loading")
        with ConversionService(settings, retry_limits=full) as conversions:
            documents, skipped = discover(corpus, settings.max_file_mb, convert=conversions.document)
        documents = resolve_links(documents)
        user_glossary: list[list[str]] = []
        removals: list[list[str]] = []  # "- X" lines of glossary.txt: wrong groups or names to drop
        glossary_path = corpus / GLOSSARY_FILE
        if glossary_path.is_file() and not glossary_path.is_symlink():
            user_glossary, removals = read_user_glossary(glossary_path)
            documents = [d for d in documents if d.doc_id != GLOSSARY_FILE]
        summary.skipped = skipped
        report("files", len(documents), len(documents))

        model_id = embedder.model_id if embedder is not None else embed_model_id_for(settings)
        prints = fingerprint(settings, model_id)
        previous = store.previous()
        old_files: dict[str, str] = previous.manifest.files if previous is not None else {}
        new_files = {d.doc_id: d.sha256 for d in documents}
        summary.added = sorted(set(new_files) - set(old_files))
        summary.removed = sorted(set(old_files) - set(new_files))
        summary.changed = sorted(k for k in new_files if k in old_files and old_files[k] != new_files[k])
        same_settings = previous is not None and previous.manifest.settings_fingerprint == prints
        glossary_same = (
            previous is not None
            and _glossary_source(previous) == user_glossary
            and previous.manifest.ingest_summary.get("glossary_removals", []) == removals
        )
        previous_groups = len(previous.alias_groups) if previous is not None else 0
        # the manifest reports the skipped files: a new or fixed one is a change even when no note changed
        skipped_same = previous is not None and previous.manifest.skipped == [
            {"path": s.path, "reason": s.reason} for s in skipped
        ]
        if previous is not None:
            previous.close()
        if (
            not full
            and same_settings
            and glossary_same
            and skipped_same
            and not (summary.added or summary.removed or summary.changed)
        ):
            summary.documents = len(documents)
            summary.chunks = previous.manifest.counts.get("chunks", 0) if previous else 0
            summary.alias_groups = previous_groups
            summary.version = store.current_version()
            summary.seconds = time.perf_counter() - started
            return summary

        stage("chunking")
        chunks: list[Chunk] = []
        for i, doc in enumerate(documents, start=1):
            chunks.extend(chunk_document(doc, settings.chunk_size, settings.chunk_overlap))
            report("chunks", i, len(documents))
        if not chunks:
            raise IngestFailed(f"no ingestible notes in {corpus}: nothing to index")

        # the user's removals apply to the groups found in the notes; the user's own groups join afterwards
        found, removed = apply_removals(
            merge_groups(extract_alias_groups(documents), front_matter_aliases(documents)), removals
        )
        groups = merge_groups(found, user_glossary)
        user_words = sorted(heading_terms(heading_texts(chunks)) | {m for g in groups for m in g if is_cjk(m)})
        tokenizer = Tokenizer(user_words, cache_dir=settings.cache_dir / "jieba")
        tokens = [tokenizer.tokenize(c.index_text) for c in chunks]

        stage("embedding")
        embed_started = time.perf_counter()
        vectors, embedded, reused = _embed_chunks(
            chunks, settings, model_id, embedder, full=full, report=report
        )
        # the notes' terms, for the cross-lingual bridge (a few hundred short texts, cached like chunks)
        vector_terms = bridge_terms(groups, user_words)
        term_vectors, _ = _embed_cached(
            vector_terms, settings, model_id, embedder, full=full, report=report, as_queries=True, label="terms"
        )
        # the reader's candidate sentences with their headings (short texts, embedded shortest first)
        sentence_texts = reader_texts(chunks)
        sentence_vectors, _ = _embed_cached(
            sentence_texts,
            settings,
            model_id,
            embedder,
            full=full,
            report=report,
            label="sentences",
            by_length=True,
            save_every=2 * MAX_BATCH_SIZE,  # short texts: two full batches, side by side
        )
        summary.embed_seconds = time.perf_counter() - embed_started

        summary.documents = len(documents)
        summary.chunks = len(chunks)
        summary.embedded = embedded
        summary.reused = reused
        summary.alias_groups = len(groups)
        build = IndexBuild(
            documents=documents,
            chunks=chunks,
            vectors=vectors,
            tokens=tokens,
            embed_model_id=model_id,
            settings_fingerprint=prints,
            alias_groups=groups,
            user_words=user_words,
            skipped=skipped,
            ingest_summary={"user_glossary": user_glossary, "glossary_removals": removals, "glossary_removed": removed},
            vector_terms=vector_terms,
            term_vectors=term_vectors if vector_terms else None,
            reader_texts=sentence_texts,
            reader_vectors=sentence_vectors if sentence_texts else None,
        )
        try:
            stage("writing")  # inside the try: a write failure injected on entering the stage is reported alike
            manifest = store.publish(build, on_stage=stage)
        except OSError as exc:
            raise IngestFailed(f"could not write the index ({exc.strerror or exc}); the previous index is intact") from exc
        summary.version = manifest.version
        summary.published = True
        summary.seconds = time.perf_counter() - started
        return summary


def _glossary_source(index: IndexBackend) -> list[list[str]]:
    return index.manifest.ingest_summary.get("user_glossary", [])


def _embed_chunks(
    chunks: list[Chunk],
    settings: Settings,
    model_id: str,
    embedder: Embedder | None,
    *,
    full: bool,
    report: Progress,
) -> tuple[np.ndarray, int, int]:
    """Vectors for every chunk: from the cache where the text is unchanged, else from the embedder.

    Returns (vectors, texts embedded now, chunks whose vector came from the cache).
    """
    vectors, embedded = _embed_cached(
        [c.index_text for c in chunks], settings, model_id, embedder, full=full, report=report, by_length=True
    )
    return vectors, embedded, len(chunks) - embedded


def _embed_cached(
    texts: list[str],
    settings: Settings,
    model_id: str,
    embedder: Embedder | None,
    *,
    full: bool,
    report: Progress,
    as_queries: bool = False,
    label: str = "embeddings",
    by_length: bool = False,
    save_every: int | None = None,
) -> tuple[np.ndarray, int]:
    """Vectors of `texts` (as passages, or as queries), through the embedding cache; returns (vectors, number
    of distinct texts embedded now). The cache is saved every `save_every` texts (default: four batches): a
    killed run keeps its work."""
    cache = EmbeddingCache(settings.cache_dir / "embeddings.sqlite")
    try:
        kind = f"{model_id}#query" if as_queries else model_id  # the e5 prompts differ: so do the vectors
        keys = [text_key(kind, text) for text in texts]
        cached = {} if full else cache.get_many(keys)
        text_of = {key: text for key, text in zip(keys, texts, strict=True) if key not in cached}
        missing = list(text_of)
        if by_length:  # batches of similar length waste no time on padding
            missing.sort(key=lambda k: len(text_of[k]))
        report(label, 0, len(missing))
        if missing:
            embedder = embedder or load_embedder(settings)
            embed = embedder.embed_queries if as_queries else embedder.embed_passages
            batch = save_every or max(settings.embed_batch_size * 4, 32)
            for start in range(0, len(missing), batch):
                part = missing[start : start + batch]
                vecs = embed([text_of[k] for k in part])
                cache.put_many(zip(part, vecs, strict=True))
                cached.update(zip(part, vecs, strict=True))
                report(label, start + len(part), len(missing))
        dim = next(iter(cached.values())).shape[0] if cached else 0
        vectors = (
            np.vstack([cached[k] for k in keys]).astype(np.float32, copy=False)
            if keys
            else np.zeros((0, dim), dtype=np.float32)
        )
        return vectors, len(missing)
    finally:
        cache.close()


def documents_from(chunks: list[Chunk]) -> set[str]:
    """The doc ids a list of chunks covers (handy in tests and summaries)."""
    return {c.doc_id for c in chunks}


__all__ = ["IngestSummary", "run_ingest", "fingerprint", "Document"]
