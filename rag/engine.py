"""The engine: one loaded index, the embedder, the retriever and the answerer behind `ask` and `search`.

Edges (CLI, API) build one `Engine` from `Settings` and call it; the engine never imports an edge.
An ingest publishes a new index version on disk; `reload()` swaps it in between requests, and a request
that is already running keeps the snapshot it started with.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from rag.aliases import AliasIndex
from rag.answer import Generator, make_generator, refusal_answer
from rag.answer.citations import citation_from_hit
from rag.config import Settings
from rag.conversation import resolve_question
from rag.embedding import Embedder, load_embedder
from rag.errors import IndexNotReady, InvalidInput, NotFound
from rag.index import IndexBackend, IndexStore
from rag.retrieval import Retriever, SearchResult
from rag.text import Tokenizer
from rag.types import Answer, Citation, Hit, RetrievalMode, Turn

log = logging.getLogger(__name__)

# A request that finds no index loaded waits this long for a load already under way (the API's index poll,
# say) instead of failing at once.
PICKUP_WAIT_SECONDS = 60.0

StreamEvent = tuple[Literal["citations", "token", "done"], Any]


@dataclass
class _State:
    """Everything that belongs to one published index version; replaced as a whole on reload."""

    version: str
    index: IndexBackend
    tokenizer: Tokenizer
    retriever: Retriever
    generator: Generator


class Engine:
    """Answers questions and searches over the currently published index."""

    def __init__(self, settings: Settings, *, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.store = IndexStore.from_settings(settings)
        self._embedder = embedder
        self._state: _State | None = None
        self._reload_lock = threading.Lock()
        self._pickup_lock = threading.Lock()
        self._failed_version: str | None = None  # a published version that failed to load (not retried)
        self._reranker = None
        self.last_error: str | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = load_embedder(self.settings)
        return self._embedder

    @property
    def ready(self) -> bool:
        return self._state is not None

    @property
    def version(self) -> str | None:
        return self._state.version if self._state else None

    def load(self) -> None:
        """Load the published index (raises IndexNotReady / IndexCorrupted)."""
        with self._reload_lock:
            self._state = self._build_state(self.store.load(verify=True))
            self.last_error = None

    def reload(self) -> bool:
        """Swap in a newer published index if there is one. A bad new index leaves the current one serving.

        Returns True when a new version was loaded.
        """
        with self._reload_lock:
            current = self.store.current_version()
            if current is None or (self._state is not None and current == self._state.version):
                return False
            try:
                new_state = self._build_state(self.store.load(verify=True))
            except IndexNotReady as exc:
                self.last_error = exc.message
                log.error("new index %s refused: %s", current, exc.message)
                if self._state is None:
                    raise
                return False
            old, self._state = self._state, new_state
            self.last_error = None
        if old is not None:
            # Let requests that hold the old snapshot finish; its files stay until a later GC.
            closer = threading.Timer(30.0, old.index.close)
            closer.daemon = True
            closer.start()
        return True

    def _build_state(self, index: IndexBackend) -> _State:
        embedder = self.embedder
        if index.manifest.embed_model_id != embedder.model_id:
            index.close()
            raise IndexNotReady(
                f"the index was built with embedder {index.manifest.embed_model_id!r} but the configured "
                f"one is {embedder.model_id!r}: run `rag ingest --full`"
            )
        tokenizer = Tokenizer(index.user_words, cache_dir=self.settings.cache_dir / "jieba")
        aliases = AliasIndex(index.alias_groups)
        retriever = Retriever(index, embedder, tokenizer, aliases, self.settings, reranker=self._load_reranker())
        generator = make_generator(self.settings, tokenizer, embedder.embed_queries)
        return _State(index.manifest.version, index, tokenizer, retriever, generator)

    def _load_reranker(self):
        if not self.settings.rerank_model:
            return None
        if self._reranker is None:
            from sentence_transformers import CrossEncoder

            self._reranker = CrossEncoder(self.settings.rerank_model, device="cpu")
        return self._reranker

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
            try:
                if not self.reload() and self.version != current:
                    self._failed_version = current  # refused; the current index keeps serving
            except IndexNotReady:
                self._failed_version = current
            return self._state is not None
        except IndexNotReady:  # CURRENT itself is unreadable
            return self._state is not None
        finally:
            self._pickup_lock.release()

    def _snapshot(self) -> _State:
        state = self._state
        if state is None and self.load_if_published(wait=PICKUP_WAIT_SECONDS):
            state = self._state
        if state is None:
            raise IndexNotReady("no index is loaded: run `rag ingest` first")
        return state

    # --- queries --------------------------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        top_k: int | None = None,
        mode: RetrievalMode = "hybrid",
        explain: bool = False,
        expansion: bool | None = None,
    ) -> SearchResult:
        """Ranked passages and the relevance decision for `query`."""
        query = self._check_question(query)
        return self._snapshot().retriever.search(
            query, top_k=self._check_top_k(top_k), mode=mode, explain=explain, expansion=expansion
        )

    def ask(
        self,
        question: str,
        *,
        history: Sequence[Turn] = (),
        top_k: int | None = None,
        mode: RetrievalMode = "hybrid",
        explain: bool = False,
    ) -> Answer:
        """Answer from the notes, with citations, or say plainly that they do not cover it."""
        answer: Answer | None = None
        for kind, payload in self.ask_stream(question, history=history, top_k=top_k, mode=mode, explain=explain):
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
    ) -> Iterator[StreamEvent]:
        """Events for a streamed answer: ("citations", passages), ("token", text)…, ("done", Answer)."""
        started = time.perf_counter()
        question = self._check_question(question)
        top_k = self._check_top_k(top_k)
        state = self._snapshot()
        resolved = resolve_question(question, history, state.generator, state.tokenizer)
        result = state.retriever.search(resolved, top_k=top_k, mode=mode, explain=explain)
        timings = dict(result.timings)
        if not result.gate.answerable or not result.hits:
            answer = refusal_answer(question)
            yield "citations", []
            yield "token", answer.text
        else:
            yield "citations", passages_as_citations(result.hits)
            t_gen = time.perf_counter()
            answer = None
            for item in state.generator.stream(question if resolved == question else resolved, result.hits):
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
            explanation=result.explanation,
        )
        yield "done", answer

    # --- knowledge base -------------------------------------------------------------------------

    def documents(self) -> list[dict]:
        return self._snapshot().index.documents()

    def document(self, doc_id: str) -> dict:
        """One note: metadata, its raw text and its chunks with offsets (for source previews)."""
        index = self._snapshot().index
        doc = index.document(doc_id)
        if doc is None:
            raise NotFound(f"no document {doc_id!r} in the knowledge base")
        return {
            "doc_id": doc.doc_id,
            "title": doc.title,
            "sha256": doc.sha256,
            "encoding": doc.encoding,
            "size_bytes": doc.size_bytes,
            "text": doc.text,
            "chunks": [
                {
                    "chunk_id": c.chunk_id,
                    "heading_path": list(c.heading_path),
                    "start": c.start,
                    "end": c.end,
                    "ordinal": c.ordinal,
                }
                for c in index.doc_chunks(doc_id)
            ],
        }

    def glossary(self) -> list[list[str]]:
        return self._snapshot().index.alias_groups

    def stats(self) -> dict:
        state = self._state
        info: dict[str, Any] = {
            "ready": state is not None,
            "embedder": self._embedder.model_id if self._embedder else None,
            "llm_backend": self.settings.generator_name,
            "last_error": self.last_error,
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
        question = (question or "").strip()
        if not question:
            raise InvalidInput("the question is empty")
        if len(question) > self.settings.max_question_chars:
            raise InvalidInput(
                f"the question is {len(question)} characters long; the limit is {self.settings.max_question_chars}"
            )
        return question

    def _check_top_k(self, top_k: int | None) -> int:
        top_k = top_k or self.settings.top_k
        if not 1 <= top_k <= 50:
            raise InvalidInput("top_k must be between 1 and 50")
        return top_k


def passages_as_citations(hits: Sequence[Hit]) -> list[Citation]:
    """The numbered passages given to the answerer, in the shape of citations (for streaming clients)."""
    return [
        citation_from_hit(number, hit, hit.chunk.text[:300], score=round(hit.score, 6))
        for number, hit in enumerate(hits, start=1)
    ]
