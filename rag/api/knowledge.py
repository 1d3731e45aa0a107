"""Which knowledge base a request is for, and its engine, settings and jobs.

Every knowledge-base scoped route takes a `kb` (a JSON field, a query parameter or a form field); absent, it is
RAG_DEFAULT_KB, so clients that predate knowledge bases keep working. A bad name is 400 `invalid_input`, an
unknown one 404 `kb_not_found`. Engines come from the app's `EnginePool` (loaded on first use, in a worker
thread: the first use of a knowledge base may load its embedder).
"""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import Query, Request

from rag.api.schemas import KB_PATTERN
from rag.config import Settings
from rag.engine import Engine
from rag.engine_pool import EnginePool
from rag.knowledge_bases import KnowledgeBaseEmpty, KnowledgeBaseRegistry, check_name

KB_HELP = "Knowledge base (default: RAG_DEFAULT_KB, normally `default`)."
KbQuery = Annotated[str | None, Query(max_length=63, pattern=KB_PATTERN, description=KB_HELP)]


def kb_name(request: Request, kb: str | None) -> str:
    """The knowledge base a request names (the default one when it names none); InvalidInput for a bad name."""
    settings: Settings = request.app.state.settings
    return check_name(kb) if kb is not None else settings.default_kb


def pool_of(request: Request) -> EnginePool:
    return request.app.state.pool


def registry_of(request: Request) -> KnowledgeBaseRegistry:
    return request.app.state.pool.registry


async def engine_for(request: Request, kb: str | None, *, require_index: bool = True) -> tuple[str, Engine]:
    """The name and engine of the request's knowledge base; KnowledgeBaseNotFound for an unknown one, and
    (with `require_index`) KnowledgeBaseEmpty, 409, for one other than the default that was never ingested: the
    default one without an index is the service not being ready (503), a new one is the client's to fill."""
    name = kb_name(request, kb)
    engine = await anyio.to_thread.run_sync(pool_of(request).engine, name)
    if require_index and name != request.app.state.settings.default_kb and not engine.ready:
        await anyio.to_thread.run_sync(_check_published, name, engine)
    return name, engine


def _check_published(name: str, engine: Engine) -> None:
    if engine.store.current_version() is None:
        raise KnowledgeBaseEmpty(
            f"knowledge base {name!r} has no index yet: add notes to it and ingest them "
            f'(POST /ingest with {{"kb": "{name}"}}, or `rag ingest --kb {name}`)'
        )


async def settings_for(request: Request, kb: str | None) -> tuple[str, Settings]:
    """The name and settings (its corpus folder, its index) of the request's knowledge base."""
    name = kb_name(request, kb)
    return name, await anyio.to_thread.run_sync(registry_of(request).settings_for, name)
