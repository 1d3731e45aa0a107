"""The HTTP API app: `create_app(settings)` builds a FastAPI app around one `Engine`.

The lifespan loads the engine's index (the app starts without one and answers 503 until an ingest publishes
it), opens the feedback store, starts the ingest jobs and polls for indexes published by other processes.
`create_app` wires the routes, the exception handlers and the middleware.

Endpoints: /ask (JSON or server-sent events), /search, /ingest (background jobs), /documents (list, show,
upload), /glossary, /stats, /feedback, /healthz, /readyz, /metrics, and an OpenAI-compatible
/v1/chat/completions and /v1/models.
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
from rag.api.middleware import PUBLIC_PATHS, AuthMiddleware, BodyLimitMiddleware, EdgeMiddleware, access_log
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
from rag.errors import RagError
from rag.feedback import FeedbackStore
from rag.jobs import IngestJobs
from rag.metrics import Metrics

log = logging.getLogger(__name__)

MULTIPART_OVERHEAD = 16 * 1024  # room for multipart headers and boundaries around an upload


async def _poll_index(engine: Engine, every: float) -> None:
    """Swap in an index that another process (`rag ingest`) published; runs for the app's lifetime."""
    if every <= 0:
        return
    while True:
        await asyncio.sleep(every)
        try:
            await anyio.to_thread.run_sync(engine.load_if_published)
        except Exception:  # a bad poll must not end polling; the engine logs refused versions itself
            log.exception("index poll failed")


def create_app(settings: Settings, *, engine: Engine | None = None) -> FastAPI:
    """The API app for `settings`. The engine (built here unless given) is loaded in the lifespan;
    without an index the app still starts and answers 503 until an ingest job publishes one."""
    metrics = Metrics()
    api_key = settings.api_key.get_secret_value().strip() if settings.api_key else ""
    if settings.api_key is not None and not api_key:
        log.warning("RAG_API_KEY is set but empty: the API is open (no authentication)")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        eng = engine or Engine(settings)
        app.state.engine = eng
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
        app.state.feedback = await anyio.to_thread.run_sync(FeedbackStore, settings.data_dir / "feedback.sqlite")
        app.state.jobs = IngestJobs(settings, eng, on_finished=metrics.observe_ingest)
        metrics.track_ready(lambda: eng.ready)
        # uploads of PDF, Word and HTML files are converted once (worker process, started on first use) before
        # they are saved: only a file ingest will read gets a 201
        app.state.conversions = ConversionService(settings)
        poll = asyncio.create_task(_poll_index(eng, settings.index_poll_seconds))
        try:
            yield
        finally:
            poll.cancel()
            await anyio.to_thread.run_sync(app.state.conversions.close)

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
    app.include_router(conversations_router)

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
