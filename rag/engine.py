"""The engine: one loaded index, the embedder, the retriever and the answerer behind `ask` and `search`.

Edges (CLI, API) build one `Engine` from `Settings` and call it; the engine never imports an edge.
An ingest publishes a new index version on disk; `reload()` swaps it in between requests, and a request
that is already running keeps the snapshot it started with.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from rag.aliases import AliasIndex, glossary_report
from rag.answer import Generator, make_generator, refusal_answer
from rag.answer.citations import citation_from_hit
from rag.answer.leading import new_first
from rag.answer.reader import READ_PASSAGES, Reader, Reading
from rag.config import Settings
from rag.embedding import Embedder, load_embedder, load_reranker
from rag.errors import REPAIR_HINT, IndexCorrupted, IndexNotReady, InvalidInput, NotFound, RagError
from rag.filters import filtered_rows, linked
from rag.index import IndexBackend, open_store
from rag.question_rewrite import resolve_question
from rag.retrieval import Reranker, Retriever, SearchResult
from rag.text import Tokenizer
from rag.types import Answer, Citation, Hit, RetrievalMode, Turn

log = logging.getLogger(__name__)

# A request that finds no index loaded waits this long for a load already under way (the API's index poll,
# say) instead of failing at once.
PICKUP_WAIT_SECONDS = 60.0

StreamEvent = tuple[Literal["citations", "token", "done"], Any]


@dataclass
class _State:
    """Everything that belongs to one published index version; replaced as a whole on reload.

    Requests hold it (`Engine.hold`) while they run; a replaced state closes its index when the last holder
    lets go, so a slow request never finds its index closed under it.
    """

    version: str
    index: IndexBackend
    tokenizer: Tokenizer
    retriever: Retriever
    generator: Generator
    reader: Reader
    holders: int = 0  # requests using this state now (guarded by Engine._holders_lock)
    retired: bool = False  # replaced by a newer state: close the index when holders drops to 0


class Engine:
    """Answers questions and searches over the currently published index."""

    def __init__(self, settings: Settings, *, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.store = open_store(settings)
        self._embedder = embedder
        self._state: _State | None = None
        self._reload_lock = threading.Lock()
        self._pickup_lock = threading.Lock()
        self._holders_lock = threading.Lock()  # guards _state swaps and every state's holders count
        self._embedder_lock = threading.Lock()
        self._reranker_lock = threading.Lock()
        self._failed_version: str | None = None  # a published version that failed to load (not retried)
        self._reranker: Reranker | None = None
        self.last_error: str | None = None
        # Set while serving an older version because the published one failed its checks: why, and which.
        self.degraded: str | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        """The embedder, loaded on first use (once, however many threads ask at the same time)."""
        if self._embedder is None:
            with self._embedder_lock:
                if self._embedder is None:
                    self._embedder = load_embedder(self.settings)
        return self._embedder

    def load_reranker(self) -> Reranker | None:
        """The cross-encoder named by RAG_RERANK_MODEL (None when unset), loaded once; ModelUnavailable,
        naming the setting, when it cannot be loaded. `rag serve` calls it before the server starts."""
        if not self.settings.rerank_model:
            return None
        if self._reranker is None:
            with self._reranker_lock:
                if self._reranker is None:
                    self._reranker = load_reranker(self.settings.rerank_model)
        return self._reranker

    @property
    def has_embedder(self) -> bool:
        """True once the embedder is loaded (so another engine can share it)."""
        return self._embedder is not None

    def close(self) -> None:
        """Stop serving: the loaded index closes when its last request lets go of it (an unloaded knowledge
        base). A later request loads it again."""
        with self._reload_lock, self._holders_lock:
            old, self._state = self._state, None
            close_old = old is not None and old.holders == 0
            if old is not None:
                old.retired = True
        if close_old:
            old.index.close()

    @property
    def ready(self) -> bool:
        return self._state is not None

    @property
    def version(self) -> str | None:
        return self._state.version if self._state else None

    def load(self) -> None:
        """Load the published index; when it fails its checks, the newest intact older version (`degraded`
        says so). Raises IndexNotReady / IndexCorrupted when there is nothing to serve."""
        with self._reload_lock:
            try:
                state, degraded = self._open_published()
            except IndexNotReady as exc:
                self.last_error = exc.message
                raise
            self._swap(state, degraded)

    def reload(self) -> bool:
        """Swap in a newer published index if there is one. A bad new index leaves the current one serving
        (degraded); with none serving yet, the newest intact older version is loaded instead.

        Returns True when a version was loaded.
        """
        with self._reload_lock:
            current = self.store.current_version()
            if current is None or (self._state is not None and current == self._state.version):
                return False
            try:
                if self._state is None:
                    new_state, degraded = self._open_published()
                else:
                    new_state, degraded = self._build_state(self.store.load(verify=True)), None
            except IndexNotReady as exc:
                self.last_error = exc.message
                log.error("new index %s refused: %s", current, exc.message)
                if self._state is None:
                    raise
                self.degraded = f"serving the older version {self._state.version}: {exc.message}"
                return False
            self._swap(new_state, degraded)
        return True

    def _open_published(self) -> tuple[_State, str | None]:
        """The published version; when it is damaged, the newest intact other version and why (degraded)."""
        try:
            return self._build_state(self.store.load(verify=True)), None
        except IndexCorrupted as exc:
            fallback = self.store.load_fallback()
            if fallback is None:
                raise
            try:
                state = self._build_state(fallback)
            except IndexNotReady:
                raise exc from None
            reason = f"serving the older version {state.version}: {exc.message}"
            log.error("%s", reason)
            return state, reason

    def _swap(self, state: _State, degraded: str | None) -> None:
        """Make `state` the serving one; the replaced one closes when its last request lets go of it."""
        with self._holders_lock:
            old, self._state = self._state, state
            self.degraded = self.last_error = degraded
            close_old = old is not None and old.holders == 0
            if old is not None:
                old.retired = True
        if close_old:
            old.index.close()

    def _build_state(self, index: IndexBackend) -> _State:
        embedder = self.embedder
        if index.manifest.embed_model_id != embedder.model_id:
            index.close()
            raise IndexNotReady(
                f"the index was built with embedder {index.manifest.embed_model_id!r} but the configured "
                f"one is {embedder.model_id!r}: {REPAIR_HINT}"
            )
        tokenizer = Tokenizer(index.user_words, cache_dir=self.settings.cache_dir / "jieba")
        aliases = AliasIndex(index.alias_groups)
        retriever = Retriever(index, embedder, tokenizer, aliases, self.settings, reranker=self.load_reranker())
        generator = make_generator(self.settings, tokenizer, embedder.embed_queries)
        reader = Reader(index, tokenizer, embed_passages=embedder.embed_passages, threshold=self.settings.reader_threshold)
        return _State(index.manifest.version, index, tokenizer, retriever, generator, reader)

    def load_if_published(self, *, wait: float = 0.0) -> bool:
        """Load the published version when it is not the one serving: with no index yet, or after `rag ingest`
        in another process published a newer one, so neither needs a restart (the API calls this on a timer).

        A version that failed to load is not tried again until CURRENT names another one. A caller that finds
        another one loading waits up to `wait` seconds for it (requests with no index to serve do; the timer
        does not). Returns True when an index is serving.
        """
        lock = self._pickup_lock
        if not (lock.acquire(timeout=wait) if wait > 0 else lock.acquire(blocking=False)):
            return self._state is not None
        try:
            current = self.store.current_version()
            if current is None or current in (self._failed_version, self.version):
                return self._state is not None
            with contextlib.suppress(RagError):  # a damaged index or a model that cannot load: logged
                self.reload()
            if self.version != current:
                self._failed_version = current  # refused (or an older version serves instead): not retried
            return self._state is not None
        except IndexNotReady:  # CURRENT itself is unreadable
            return self._state is not None
        finally:
            self._pickup_lock.release()

    @contextlib.contextmanager
    def hold(self) -> Iterator[_State]:
        """The serving snapshot, held until the block ends: a reload meanwhile swaps in a new one for later
        requests, and closes this one only when its last holder lets go."""
        if self._state is None:
            self.load_if_published(wait=PICKUP_WAIT_SECONDS)
        with self._holders_lock:
            state = self._state
            if state is None:
                raise IndexNotReady(self.last_error or f"no index is loaded: {REPAIR_HINT}")
            state.holders += 1
        try:
            yield state
        finally:
            with self._holders_lock:
                state.holders -= 1
                close = state.retired and state.holders == 0
            if close:
                state.index.close()

    # --- queries --------------------------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        top_k: int | None = None,
        mode: RetrievalMode = "hybrid",
        explain: bool = False,
        expansion: bool | None = None,
        tags: Sequence[str] = (),
        path_prefix: str | None = None,
    ) -> SearchResult:
        """Ranked passages and the relevance decision for `query` (only in documents with every one of `tags`
        and a path starting with `path_prefix`, when given)."""
        query = self._check_question(query)
        with self.hold() as state:
            return state.retriever.search(
                query, top_k=self._check_top_k(top_k), mode=mode, explain=explain, expansion=expansion,
                rows=filtered_rows(state.index, tags, path_prefix),
            )

    def ask(
        self,
        question: str,
        *,
        history: Sequence[Turn] = (),
        top_k: int | None = None,
        mode: RetrievalMode = "hybrid",
        explain: bool = False,
        tags: Sequence[str] = (),
        path_prefix: str | None = None,
    ) -> Answer:
        """Answer from the notes, with citations, or say plainly that they do not cover it."""
        answer: Answer | None = None
        for kind, payload in self.ask_stream(
            question, history=history, top_k=top_k, mode=mode, explain=explain, tags=tags, path_prefix=path_prefix
        ):
            if kind == "done":
                answer = payload
        assert answer is not None
        return answer

    def ask_stream(
        self,
        question: str,
        *,
        history: Sequence[Turn] = (),
        top_k: int | None = None,
        mode: RetrievalMode = "hybrid",
        explain: bool = False,
        tags: Sequence[str] = (),
        path_prefix: str | None = None,
    ) -> Iterator[StreamEvent]:
        """Events for a streamed answer: ("citations", passages), ("token", text)…, ("done", Answer).

        The snapshot is held until the stream ends or is closed: a reload meanwhile does not close its index.
        """
        started = time.perf_counter()
        question = self._check_question(question)
        top_k = self._check_top_k(top_k)
        with self.hold() as state:
            rows = filtered_rows(state.index, tags, path_prefix)
            yield from self._answer_events(state, started, question, history, top_k, mode, explain, rows)

    def _answer_events(
        self,
        state: _State,
        started: float,
        question: str,
        history: Sequence[Turn],
        top_k: int,
        mode: RetrievalMode,
        explain: bool,
        rows: Collection[int] | None = None,
    ) -> Iterator[StreamEvent]:
        resolved = resolve_question(question, history, state.generator, state.tokenizer, state.index)
        result, reading = self._read(state, resolved, top_k=top_k, mode=mode, explain=explain, rows=rows)
        if resolved != question:  # a follow-up asks for something new: what the last answer said gives way
            said = next((t.content for t in reversed(history) if t.role == "assistant"), "")
            reading = new_first(reading, said, asked=question)
        timings = dict(result.timings)
        hits = result.hits[:top_k]
        if not reading.answerable or not hits:
            answer = refusal_answer(question)
            yield "citations", []
            yield "token", answer.text
        else:
            yield "citations", passages_as_citations(hits)
            t_gen = time.perf_counter()
            answer = None
            for item in state.generator.stream(question if resolved == question else resolved, hits, reading):
                if isinstance(item, str):
                    yield "token", item
                else:
                    answer = item
            assert answer is not None, "generators end with an Answer"
            timings["generation_ms"] = (time.perf_counter() - t_gen) * 1000
        timings["total_ms"] = (time.perf_counter() - started) * 1000
        answer = replace(
            answer,
            question=question,
            resolved_question=resolved,
            answer_id=uuid.uuid4().hex,
            timings={k: round(v, 2) for k, v in timings.items()},
            explanation=_with_reader(result.explanation, reading, result.hits) if explain else None,
        )
        yield "done", answer

    def read(
        self, question: str, *, top_k: int | None = None, mode: RetrievalMode = "hybrid", explain: bool = False
    ) -> tuple[SearchResult, Reading]:
        """Search, then let the reader judge the top passages (what `ask` does before it answers)."""
        question = self._check_question(question)
        with self.hold() as state:
            return self._read(state, question, top_k=self._check_top_k(top_k), mode=mode, explain=explain)

    def _read(
        self,
        state: _State,
        question: str,
        *,
        top_k: int,
        mode: RetrievalMode,
        explain: bool,
        rows: Collection[int] | None = None,
    ) -> tuple[SearchResult, Reading]:
        # the reader always reads READ_PASSAGES passages: its verdict must not depend on the caller's top_k
        result = state.retriever.search(
            question, top_k=max(top_k, READ_PASSAGES), mode=mode, explain=explain, rows=rows
        )
        started = time.perf_counter()
        reading = state.reader.read(
            result.searched,
            result.hits,
            weighted=result.weighted_query,
            query_vectors=result.query_vectors,
            gate_score=result.gate.score,
            gate_features=result.gate.features,
            name_forms=result.name_forms,
            phrase_forms=result.phrase_forms,
        )
        result.timings["reader_ms"] = (time.perf_counter() - started) * 1000
        return result, reading

    # --- knowledge base -------------------------------------------------------------------------

    def documents(self) -> list[dict]:
        with self.hold() as state:
            return state.index.documents()

    def document(self, doc_id: str) -> dict:
        """One note: metadata, its raw text and its chunks with offsets (for source previews)."""
        with self.hold() as state:
            doc = state.index.document(doc_id)
            chunks = state.index.doc_chunks(doc_id) if doc is not None else []
            has_links = doc is not None and bool(doc.links or doc.backlinks)
            titles = {d["doc_id"]: d["title"] for d in state.index.documents()} if has_links else {}
        if doc is None:
            raise NotFound(f"no document {doc_id!r} in the knowledge base")
        return {
            "doc_id": doc.doc_id,
            "title": doc.title,
            "sha256": doc.sha256,
            "encoding": doc.encoding,
            "size_bytes": doc.size_bytes,
            "format": doc.converter,
            "tags": list(doc.tags),
            "aliases": list(doc.aliases),
            "pages": len(doc.page_starts) or None,
            "page_starts": list(doc.page_starts),
            "links": [linked(titles, target) for target in doc.links],
            "backlinks": [linked(titles, source) for source in doc.backlinks],
            "text": doc.text,
            "chunks": [
                {
                    "chunk_id": c.chunk_id,
                    "heading_path": list(c.heading_path),
                    "start": c.start,
                    "end": c.end,
                    "ordinal": c.ordinal,
                    **({"page": c.page} if c.page is not None else {}),
                }
                for c in chunks
            ],
        }

    def glossary(self) -> list[list[str]]:
        with self.hold() as state:
            return state.index.alias_groups

    def glossary_report(self) -> dict:
        """The alias groups with where each came from, and the user's removals (`rag.aliases.glossary_report`)."""
        with self.hold() as state:
            return glossary_report(state.index.alias_groups, state.index.manifest.ingest_summary or {})

    def stats(self) -> dict:
        state = self._state
        info: dict[str, Any] = {
            "ready": state is not None,
            "embedder": self._embedder.model_id if self._embedder else None,
            "llm_backend": self.settings.generator_name,
            "last_error": self.last_error,
            "degraded": self.degraded,
        }
        if state is not None:
            m = state.index.manifest
            info.update(
                version=m.version,
                documents=m.counts.get("documents", 0),
                chunks=m.counts.get("chunks", 0),
                alias_groups=len(state.index.alias_groups),
                index_embedder=m.embed_model_id,
                keyword_backend=m.keyword_backend,
                vector_index=m.vector_index,
                last_ingest={"at": m.created_at, **(m.ingest_summary or {})},
            )
        return info

    # --- validation -----------------------------------------------------------------------------

    def _check_question(self, question: str) -> str:
        # the limit counts the question as sent, as the API schema's maxLength does: surrounding blanks included
        raw = question or ""
        if len(raw) > self.settings.max_question_chars:
            raise InvalidInput(
                f"the question is {len(raw)} characters long; the limit is {self.settings.max_question_chars}"
            )
        question = raw.strip()
        if not question:
            raise InvalidInput("the question is empty")
        return question

    def _check_top_k(self, top_k: int | None) -> int:
        top_k = top_k or self.settings.top_k
        if not 1 <= top_k <= 50:
            raise InvalidInput("top_k must be between 1 and 50")
        return top_k


def _with_reader(explanation: dict | None, reading: Reading, hits: Sequence[Hit]) -> dict:
    """The search explanation plus the reader's top sentences and verdict."""
    return {**(explanation or {}), "reader": reading.explain(hits)}


def passages_as_citations(hits: Sequence[Hit]) -> list[Citation]:
    """The numbered passages given to the answerer, in the shape of citations (for streaming clients)."""
    return [
        citation_from_hit(number, hit, hit.chunk.text[:300], score=round(hit.score, 6))
        for number, hit in enumerate(hits, start=1)
    ]

