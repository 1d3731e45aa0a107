"""One `Engine` per knowledge base, loaded on first use and unloaded when unused for a while.

Memory grows with the knowledge bases that are loaded, not with those that exist: `engine(name)` builds a
knowledge base's engine when it is first asked for, and `unload_idle()` (the API calls it on a timer) drops
those unused for `kb_idle_seconds`. Engines with the same embedder settings share one embedder, the largest
thing a process holds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from rag.config import Settings
from rag.embedding import Embedder, load_embedder
from rag.engine import Engine
from rag.errors import RagError
from rag.knowledge_bases import KnowledgeBase, KnowledgeBaseRegistry, kb_settings

log = logging.getLogger(__name__)

EngineFactory = Callable[[Settings, Embedder | None], Engine]


def _default_factory(settings: Settings, embedder: Embedder | None) -> Engine:
    return Engine(settings, embedder=embedder)


def _embedder_key(settings: Settings) -> tuple:
    return (
        settings.embed_model,
        settings.embed_query_prompt,
        settings.embed_passage_prompt,
        settings.embed_dtype,
        settings.embed_runtime,
    )


@dataclass
class _Loaded:
    kb: KnowledgeBase
    engine: Engine
    last_used: float


class EnginePool:
    """The engines of a registry's knowledge bases. Thread-safe; `engine()` is cheap once loaded."""

    def __init__(
        self,
        settings: Settings,
        registry: KnowledgeBaseRegistry | None = None,
        *,
        factory: EngineFactory = _default_factory,
        clock: Callable[[], float] = time.monotonic,
        embedder: Embedder | None = None,
    ) -> None:
        """`embedder`, when given, is the one loaded for `settings` (the app's engine's): shared, not reloaded."""
        self.settings = settings
        self.registry = registry or KnowledgeBaseRegistry(settings)
        self._factory = factory
        self._clock = clock
        self._lock = threading.Lock()
        self._embedder_lock = threading.Lock()  # loading one takes seconds: never under `_lock`
        self._loaded: dict[str, _Loaded] = {}
        self._embedders: dict[tuple, Embedder] = {}
        if embedder is not None:
            self._embedders[_embedder_key(settings)] = embedder

    def adopt(self, name: str, engine: Engine) -> None:
        """Serve knowledge base `name` with an engine built elsewhere (a test's, or the app's given one)."""
        kb = self.registry.get(name)
        if engine.has_embedder:
            with self._embedder_lock:
                self._embedders.setdefault(_embedder_key(engine.settings), engine.embedder)
        with self._lock:
            self._loaded[name] = _Loaded(kb, engine, self._clock())

    def engine(self, name: str | None = None) -> Engine:
        """The engine of knowledge base `name` (RAG_DEFAULT_KB when None), built on first use.

        KnowledgeBaseNotFound for an unknown name. The engine loads its index lazily on its first request.
        """
        name = name or self.settings.default_kb
        with self._lock:
            loaded = self._loaded.get(name)
            if loaded is not None:
                loaded.last_used = self._clock()
                return loaded.engine
        kb = self.registry.get(name)  # outside the lock: reads a file
        settings = kb_settings(self.settings, kb)
        embedder = self._shared_embedder(settings)  # outside the lock too: may load a model
        replaced = None
        with self._lock:
            loaded = self._loaded.get(name)
            if loaded is None or loaded.kb.slug != kb.slug:  # new, or a different base now has this name
                replaced = loaded
                loaded = _Loaded(kb, self._factory(settings, embedder), self._clock())
                self._loaded[name] = loaded
                log.info("knowledge base %r opened", name)
            loaded.last_used = self._clock()
        if replaced is not None:
            replaced.engine.close()
        return loaded.engine

    def _shared_embedder(self, settings: Settings) -> Embedder | None:
        """The one embedder of every engine with these embedder settings: a loaded engine's, or loaded now.

        Given to each engine at construction, so two knowledge bases never load the same model twice (an
        engine left to load its own lazily could not share it). None when it cannot be loaded: the engine
        then reports why when it loads, as a lone engine does."""
        key = _embedder_key(settings)
        with self._embedder_lock:
            if key not in self._embedders:
                with self._lock:
                    engines = [loaded.engine for loaded in self._loaded.values()]
                found = next(
                    (e.embedder for e in engines if e.has_embedder and _embedder_key(e.settings) == key), None
                )
                if found is None:
                    try:
                        found = load_embedder(settings)
                    except RagError as exc:
                        log.warning("embedder not loaded for sharing: %s", exc.message)
                        return None
                self._embedders[key] = found
            return self._embedders[key]

    def loaded(self) -> list[str]:
        """Names of the knowledge bases whose engine is in memory."""
        with self._lock:
            return sorted(self._loaded)

    def engines(self) -> list[tuple[str, Engine]]:
        """The loaded (name, engine) pairs: for the index poll."""
        with self._lock:
            return sorted((name, loaded.engine) for name, loaded in self._loaded.items())

    def unload(self, name: str) -> bool:
        """Drop a knowledge base's engine (after a delete or rename); requests holding it finish first."""
        with self._lock:
            loaded = self._loaded.pop(name, None)
        if loaded is None:
            return False
        loaded.engine.close()
        log.info("knowledge base %r unloaded", name)
        return True

    def unload_idle(self, *, keep: set[str] | None = None) -> list[str]:
        """Unload the knowledge bases unused for `kb_idle_seconds` (0 = never), except those in `keep`."""
        idle = self.settings.kb_idle_seconds
        if idle <= 0:
            return []
        now = self._clock()
        with self._lock:
            names = [
                name for name, loaded in self._loaded.items()
                if now - loaded.last_used >= idle and name not in (keep or set())
            ]
        return [name for name in names if self.unload(name)]

    def close(self) -> None:
        for name in self.loaded():
            self.unload(name)
