"""The HTTP API app: `create_app(settings)` builds a FastAPI app around an `EnginePool`, one engine per
knowledge base (the default one's engine may be given).

The lifespan loads the default knowledge base's index (the app starts without one and answers 503 until an
ingest publishes it), opens the feedback store, sets up the per-knowledge-base ingest jobs, polls every loaded
knowledge base for indexes published by other processes and unloads those unused for RAG_KB_IDLE_SECONDS.
`create_app` wires the routes, the exception handlers and the middleware.

Endpoints: /ask (JSON or server-sent events), /search, /ingest (background jobs), /documents (list, show,
upload, delete), /glossary, /stats, /feedback, /kbs (knowledge bases), /conversations, /healthz, /readyz,
/metrics, and an OpenAI-compatible /v1/chat/completions and /v1/models (a model is a knowledge base). Every
knowledge-base scoped request takes a `kb` and defaults to RAG_DEFAULT_KB.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ingest.converters.service import ConversionService
from rag.api.conversations import router as conversations_router
from rag.api.docs import DOCS_PATHS, openapi_builder
from rag.api.kbs import router as kbs_router
from rag.api.middleware import PUBLIC_PATHS, AuthMiddleware, BodyLimitMiddleware, EdgeMiddleware, access_log
from rag.api.openai import router as openai_router
from rag.api.routes import (
    handle_http_error,
    handle_rag_error,
    handle_unexpected,
    handle_validation_error,
    router,
)
from rag.api.workers import Worker
from rag.config import Settings
from rag.engine import Engine
from rag.engine_pool import EnginePool
from rag.errors import RagError
from rag.feedback import FeedbackStore, check_feedback_url, open_feedback_store
from rag.jobs import KnowledgeBaseJobs
from rag.knowledge_bases import KnowledgeBaseRegistry
from rag.metrics import Metrics

log = logging.getLogger(__name__)

MULTIPART_OVERHEAD = 16 * 1024  # room for multipart headers and boundaries around an upload


async def _poll_index(pool: EnginePool, jobs: KnowledgeBaseJobs, every: float, keep: set[str]) -> None:
    """For the app's lifetime: swap in indexes that another process (`rag ingest`) published, in every loaded
    knowledge base, and unload those unused for `kb_idle_seconds` (never one whose ingest runs, nor `keep`)."""
    idle = pool.settings.kb_idle_seconds
    ticks = [t for t in (every, idle / 2) if t > 0]
    if not ticks:
        return
    tick = min(ticks)
    loop = asyncio.get_running_loop()
    last_poll = loop.time()
    while True:
        await asyncio.sleep(tick)
        if every > 0 and loop.time() - last_poll >= every - 1e-3:
            last_poll = loop.time()
            for name, engine in pool.engines():
                try:
                    await anyio.to_thread.run_sync(engine.load_if_published)
                except Exception:  # a bad poll must not end polling; the engine logs refused versions itself
                    log.exception("index poll of knowledge base %r failed", name)
        try:
            await anyio.to_thread.run_sync(lambda: pool.unload_idle(keep=keep | jobs.busy()))
        except Exception:
            log.exception("unloading idle knowledge bases failed")


def create_app(
    settings: Settings, *, engine: Engine | None = None, feedback: FeedbackStore | None = None
) -> FastAPI:
    """The API app for `settings`. The default knowledge base's engine (built here unless given) is loaded in
    the lifespan and stays loaded; other knowledge bases load on first use; without an index the app still starts and answers 503 until an ingest job publishes one. The feedback
    store (RAG_FEEDBACK_URL) is opened in the lifespan unless given; an unsupported URL fails here."""
    if feedback is None:
        check_feedback_url(settings)
    metrics = Metrics()
    api_key = settings.api_key.get_secret_value().strip() if settings.api_key else ""
    if settings.api_key is not None and not api_key:
        log.warning("RAG_API_KEY is set but empty: the API is open (no authentication)")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = EnginePool(settings, KnowledgeBaseRegistry(settings))
        if engine is not None:
            await anyio.to_thread.run_sync(pool.adopt, settings.default_kb, engine)
        eng = await anyio.to_thread.run_sync(pool.engine, settings.default_kb)
        app.state.pool = pool
        app.state.engine = eng  # the default knowledge base's, as at startup (readiness, older callers)
        app.state.worker = Worker(
            settings.max_concurrent_requests, settings.max_queued_requests, timeout=settings.request_timeout_seconds
        )
        app.state.load_error = None
        if not eng.ready:
            try:
                await anyio.to_thread.run_sync(eng.load)
            except RagError as exc:
                app.state.load_error = exc.message
                log.warning("serving without an index: %s", exc.message)
        store = feedback if feedback is not None else await anyio.to_thread.run_sync(open_feedback_store, settings)
        app.state.feedback = store
        jobs = KnowledgeBaseJobs(
            pool.registry.settings_for, pool.engine, default_kb=settings.default_kb, on_finished=metrics.observe_ingest
        )
        app.state.jobs = jobs
        metrics.track_ready(lambda: eng.ready)
        # uploads of PDF, Word and HTML files are converted once (worker process, started on first use) before
        # they are saved: only a file ingest will read gets a 201
        app.state.conversions = ConversionService(settings)
        pinned = {settings.default_kb}  # stays loaded: readiness and the metrics report on it
        poll = asyncio.create_task(_poll_index(pool, jobs, settings.index_poll_seconds, pinned))
        try:
            yield
        finally:
            poll.cancel()
            await anyio.to_thread.run_sync(app.state.conversions.close)
            for name, _ in pool.engines():
                if name not in pinned and not jobs.running(name):
                    await anyio.to_thread.run_sync(pool.unload, name)

    app = FastAPI(
        title="rag-notes",
        summary="Question answering with citations over a knowledge base of notes.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    public = PUBLIC_PATHS | DOCS_PATHS if settings.public_docs else PUBLIC_PATHS
    app.openapi = openapi_builder(app, settings, PUBLIC_PATHS)  # type: ignore[method-assign]
    app.state.metrics = metrics
    app.include_router(router)
    app.include_router(kbs_router)
    app.include_router(conversations_router)
    app.include_router(openai_router)

    handlers: list[tuple[type[Exception], Callable[[Request, Exception], Awaitable[Response]]]] = [
        (RagError, handle_rag_error),
        (RequestValidationError, handle_validation_error),
        (StarletteHTTPException, handle_http_error),
        (Exception, handle_unexpected),
    ]
    for exc_type, handler in handlers:
        app.add_exception_handler(exc_type, handler)

    # Added innermost first: the request passes Edge -> CORS -> Auth -> BodyLimit -> routes.
    largest_upload_mb = max(settings.max_upload_mb, settings.max_pdf_mb, settings.max_docx_mb, settings.max_html_mb)
    upload_limit = int(largest_upload_mb * 1024 * 1024) + MULTIPART_OVERHEAD  # each format's own limit: the route
    app.add_middleware(
        BodyLimitMiddleware,
        limit=settings.max_body_bytes,
        upload_limit=upload_limit,
        read_timeout=settings.read_timeout_seconds,
    )
    if api_key:
        app.add_middleware(AuthMiddleware, api_key=api_key, public=public)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(EdgeMiddleware, metrics=metrics)
    if access_log.level == logging.NOTSET:
        access_log.setLevel(logging.INFO)
    return app
