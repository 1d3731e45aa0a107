"""The API's handlers: typed dependencies, the routes, and the exception handlers.

Routes only parse, call the engine (through the `Worker`, so the event loop never blocks) and format. Job
management lives in `rag.jobs`, feedback storage in `rag.feedback`, metrics in `rag.metrics`, and writing an
uploaded note into the corpus in `ingest.corpus`. The exception handlers give every error one shape:
`{"error": {"code": ..., "message": ...}}` with a matching status.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import asdict
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from pydantic import BeforeValidator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from ingest.corpus import read_original, save_note
from rag.api.knowledge import KB_HELP, KbQuery, engine_for, kb_name, registry_of, settings_for
from rag.api.responses import error_response, event_stream, json_response, original_headers, original_url
from rag.api.schemas import (
    ERRORS,
    KB_PATTERN,
    STREAMED,
    UNPAIRED_SURROGATE,
    AskRequest,
    FeedbackList,
    FeedbackRequest,
    IngestRequest,
    JobResponse,
    SearchRequest,
    SearchResponse,
    UploadResponse,
)
from rag.api.shaping import safe_answer, safe_document, safe_hit, safe_strings, safe_text
from rag.api.workers import Worker, answer_events
from rag.config import Settings
from rag.engine import PICKUP_WAIT_SECONDS, Engine
from rag.errors import REPAIR_HINT, IndexNotReady, InvalidInput, Overloaded, RagError
from rag.feedback import FeedbackEntry, FeedbackStore
from rag.jobs import IngestJobs, KnowledgeBaseJobs
from rag.knowledge_bases import KnowledgeBaseEmpty, check_name
from rag.metrics import Metrics
from rag.retrieval import SearchResult
from rag.types import Answer, Turn

log = logging.getLogger(__name__)

_FILENAME_PARAM = re.compile(r'filename="([^"]*)"', re.IGNORECASE)


def search_payload(result: SearchResult, explain: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "query": safe_text(result.query),
        "mode": result.mode,
        "gate": asdict(result.gate),
        "hits": [safe_hit(asdict(h)) for h in result.hits],
        "timings": result.timings,
    }
    if explain:
        data["explanation"] = safe_strings(result.explanation)
    return data


def check_history(history: Sequence[Turn], settings: Settings) -> None:
    """400 for a history turn, or the whole history, over the configured limits (the question has its own)."""
    for i, turn in enumerate(history):
        if len(turn.content) > settings.max_history_turn_chars:
            raise InvalidInput(
                f"history.{i} is {len(turn.content)} characters long; the limit is {settings.max_history_turn_chars}"
            )
    total = sum(len(turn.content) for turn in history)
    if total > settings.max_history_chars:
        raise InvalidInput(f"the history holds {total} characters; the limit is {settings.max_history_chars} in all")


def strict_flag(value: Any) -> Any:
    """A boolean query parameter is `true` or `false`: "yes", "1" or "on" are refused, not guessed."""
    if isinstance(value, str):
        if value not in ("true", "false"):
            raise ValueError("must be true or false")
        return value == "true"
    return value


def wants_event_stream(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "").lower()


def upload_filename(file: UploadFile) -> str | None:
    """The file name as the client sent it. python-multipart turns `C:\\dir\\x.md` into `x.md`; we
    want to refuse names with backslashes instead of guessing, so the raw parameter wins when it has one."""
    sent = _FILENAME_PARAM.search(file.headers.get("content-disposition", ""))
    return sent.group(1) if sent and "\\" in sent.group(1) else file.filename


# --- exception handlers ------------------------------------------------------------------------------

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "unavailable",
}


async def handle_rag_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RagError)
    if exc.status >= 500:
        log.warning("%s: %s (request %s)", exc.code, exc.message, _request_id(request))
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if isinstance(exc, Overloaded):
        headers = {"Retry-After": str(exc.retry_after)}
    return error_response(exc.status, exc.code, exc.message, headers)


_BLANK_TYPES = ("string_too_short", "string_pattern_mismatch")


async def handle_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "malformed_json", "the request body is not valid JSON")
    if errors and all(e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",) for e in errors):
        return error_response(400, "invalid_input", "the request body is empty: send a JSON object")
    blank = next(
        (e for e in errors if e.get("type") in _BLANK_TYPES and tuple(e.get("loc", ()))[-1:] in (("question",), ("query",))),
        None,
    )
    if blank is not None:  # the schema says so too (minLength 1, a non-blank character); the code stays invalid_input
        return error_response(400, InvalidInput.code, f"the {blank['loc'][-1]} is empty")
    # Text that is not Unicode (a lone surrogate, "\ud800"): bad input like an empty question, not a schema mismatch.
    # pydantic refuses it itself where a pattern is checked, our validator everywhere else.
    surrogate = next((e for e in errors if e.get("type") in (UNPAIRED_SURROGATE, "string_unicode")), None)
    if surrogate is not None:
        where = ".".join(str(p) for p in surrogate.get("loc", ()) if p != "body") or "body"
        return error_response(
            400, InvalidInput.code, f"{where}: the text holds an unpaired UTF-16 surrogate (not valid Unicode)"
        )
    bad_kb = next((e for e in errors if _names_a_kb(request, tuple(e.get("loc", ())))), None)
    if bad_kb is not None:  # the schema states the name's form; the message says it in words
        try:
            check_name(str(bad_kb.get("input", "")))
        except InvalidInput as exc:
            return error_response(400, InvalidInput.code, exc.message)
    parts = []
    for e in errors[:10]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return error_response(422, "validation_error", "; ".join(parts) or "invalid request")


def _names_a_kb(request: Request, loc: tuple) -> bool:
    """True when a validation error's location is a knowledge-base name (a `kb` anywhere, or /kbs' `name`)."""
    return loc[-1:] == ("kb",) or (request.url.path.startswith("/kbs") and loc[-1:] == ("name",))


async def handle_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    headers = dict(exc.headers or {})
    if status == 404 and "route" not in request.scope:  # the router found no route for the path
        message = f"no endpoint {request.method} {request.url.path}"
    elif status == 405:
        # Starlette names only the first route that matched the path; the path may have several (GET and POST).
        headers["Allow"] = ", ".join(allowed_methods(request))
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=headers)
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(status, _HTTP_CODES.get(status, "error"), message, headers or None)


_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route accepts on the request's path (asked of the routes themselves), and OPTIONS."""
    routes = request.app.router.routes
    allowed = [
        method for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    ]
    return [*allowed, "OPTIONS"]


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled %s (request %s)", type(exc).__name__, _request_id(request), exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


def _request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", "-"))


# --- dependencies --------------------------------------------------------------------------------------


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_worker(request: Request) -> Worker:
    return request.app.state.worker


def get_jobs(request: Request) -> KnowledgeBaseJobs | IngestJobs:
    """The ingest jobs of every knowledge base (a test may give the `IngestJobs` of one)."""
    return request.app.state.jobs


def get_feedback(request: Request) -> FeedbackStore:
    return request.app.state.feedback


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
WorkerDep = Annotated[Worker, Depends(get_worker)]
JobsDep = Annotated[KnowledgeBaseJobs | IngestJobs, Depends(get_jobs)]
FeedbackDep = Annotated[FeedbackStore, Depends(get_feedback)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


def doc_url(request: Request, doc_id: str, kb: str) -> str:
    """Where a document's original file is served (`?kb=` unless it is in the default knowledge base)."""
    return original_url(doc_id, None if kb == request.app.state.settings.default_kb else kb)


def not_ready(engine: Engine, load_error: str | None) -> IndexNotReady:
    """Why nothing is served. Index messages name REPAIR_HINT themselves; a model that failed to load does not
    (an ingest would not fix it)."""
    return IndexNotReady(engine.last_error or load_error or f"no index is loaded: {REPAIR_HINT}")


# --- routes ----------------------------------------------------------------------------------------------

router = APIRouter(responses=ERRORS)


@router.get("/healthz", tags=["ops"])
@router.head("/healthz", include_in_schema=False)  # probes that only look at the status
async def healthz() -> dict[str, str]:
    """Liveness: the process answers (no auth)."""
    return {"status": "ok"}


@router.get("/readyz", tags=["ops"])
@router.head("/readyz", include_in_schema=False)
async def readyz(request: Request, engine: EngineDep) -> dict[str, Any]:
    """Readiness: 200 once an index is loaded, else 503 with guidance (no auth). "degraded" (still 200): an
    older intact version serves because the published one is damaged; `reason` says why and how to repair."""
    if not engine.ready and not await anyio.to_thread.run_sync(
        functools.partial(engine.load_if_published, wait=PICKUP_WAIT_SECONDS)
    ):
        raise not_ready(engine, request.app.state.load_error)
    degraded = engine.degraded
    if degraded:
        return {"status": "degraded", "version": engine.version, "reason": degraded}
    return {"status": "ready", "version": engine.version}


@router.get("/metrics", tags=["ops"], response_class=Response)
async def metrics(registry: MetricsDep) -> Response:
    """Prometheus metrics."""
    body, content_type = registry.render()
    return Response(body, media_type=content_type)


@router.post("/ask", response_model=Answer, tags=["query"], responses=STREAMED)
async def ask(body: AskRequest, request: Request, worker: WorkerDep, settings: SettingsDep) -> Response:
    """Answer a question with citations from knowledge base `kb`; `stream: true` (or Accept: text/event-stream)
    for SSE."""
    _, engine = await engine_for(request, body.kb)
    history = [Turn(t.role, t.content) for t in body.history]
    check_history(history, settings)
    options = {
        "history": history,
        "top_k": body.top_k,
        "mode": body.mode,
        "explain": body.explain,
        "tags": body.tags,
        "path_prefix": body.path_prefix,
    }
    if body.stream or wants_event_stream(request):
        stream = await worker.stream(lambda: engine.ask_stream(body.question, **options))
        return event_stream(answer_events(stream, request))
    answer = await worker.run(engine.ask, body.question, **options)
    return json_response(asdict(safe_answer(answer)))


@router.post("/search", response_model=SearchResponse, tags=["query"])
async def search(body: SearchRequest, request: Request, worker: WorkerDep) -> Response:
    """Ranked passages of knowledge base `kb` and the relevance decision, without an answer."""
    _, engine = await engine_for(request, body.kb)
    result = await worker.run(
        engine.search, body.query, top_k=body.top_k, mode=body.mode, explain=body.explain, expansion=body.expansion,
        tags=body.tags, path_prefix=body.path_prefix,
    )
    return json_response(search_payload(result, body.explain))


@router.post("/ingest", status_code=202, response_model=JobResponse, tags=["ingest"])
async def start_ingest(request: Request, jobs: JobsDep, body: IngestRequest | None = None) -> Response:
    """Start a background ingest of knowledge base `kb` (one at a time per knowledge base; 409 while one of it
    runs, while those of other knowledge bases may run at once)."""
    name = kb_name(request, body.kb if body else None)
    await anyio.to_thread.run_sync(registry_of(request).get, name)  # 404 for an unknown knowledge base
    job = await anyio.to_thread.run_sync(lambda: jobs.start(full=bool(body and body.full), kb=name))
    return json_response(job, 202)


@router.get("/ingest/{job_id}", response_model=JobResponse, tags=["ingest"])
async def ingest_status(job_id: str, jobs: JobsDep) -> Response:
    """State, progress and summary of an ingest job (of any knowledge base; `kb` says which)."""
    return json_response(jobs.get(job_id))


@router.get("/documents", tags=["knowledge base"])
async def list_documents(request: Request, worker: WorkerDep, kb: KbQuery = None) -> Response:
    """The notes in knowledge base `kb`'s index."""
    try:
        name, engine = await engine_for(request, kb)
    except KnowledgeBaseEmpty:  # a new knowledge base: nothing ingested yet is an empty list, not an error
        return json_response({"kb": kb_name(request, kb), "documents": []})
    documents = await worker.run(engine.documents)
    return json_response(
        {"kb": name, "documents": [{**safe_document(d), "original_url": doc_url(request, d["doc_id"], name)} for d in documents]}
    )


@router.post("/documents", status_code=201, response_model=UploadResponse, tags=["knowledge base"])
async def upload_document(
    request: Request,
    file: UploadFile,
    settings: SettingsDep,
    worker: WorkerDep,
    overwrite: Annotated[
        bool, Query(description="Replace a note of the same name (true or false)."), BeforeValidator(strict_flag)
    ] = False,
    kb: Annotated[str | None, Form(max_length=63, pattern=KB_PATTERN, description=KB_HELP)] = None,
    kb_param: Annotated[str | None, Query(alias="kb", max_length=200, description=KB_HELP)] = None,
) -> Response:
    """Add a note (.md, .markdown, .txt), PDF, Word (.docx) or web page (.html, .htm) to the corpus; run POST /ingest
    afterwards to index it. The type is checked by content, each format has its own size limit, and only a file
    that ingest will read is saved (a PDF without a text layer, say, is refused with the reason). The file goes
    into knowledge base `kb`'s corpus folder (a form field, or a query parameter)."""
    if kb is not None and kb_param is not None and kb != kb_param:
        raise InvalidInput(f"the form says knowledge base {kb!r} and the query {kb_param!r}; name one")
    _, kb_settings = await settings_for(request, kb if kb is not None else kb_param)
    data = await file.read()
    mb = 1024 * 1024
    limits = {"pdf": int(settings.max_pdf_mb * mb), "docx": int(settings.max_docx_mb * mb), "html": int(settings.max_html_mb * mb)}
    saved = await worker.run(
        save_note, kb_settings.corpus_dir, upload_filename(file), data,
        max_bytes=int(settings.max_upload_mb * mb), overwrite=overwrite, limits=limits,
        convert=request.app.state.conversions.convert,
    )
    return json_response(saved, 201)


@router.get(
    "/documents/{doc_id:path}/original",
    tags=["knowledge base"],
    response_class=Response,
    responses={200: {"description": "The file as it lies in the corpus", "content": {"application/octet-stream": {}}}},
)
async def document_original(doc_id: str, request: Request, worker: WorkerDep, kb: KbQuery = None) -> Response:
    """The original file of a document in knowledge base `kb` (a PDF opens at `#page=N`)."""
    name, engine = await engine_for(request, kb)
    _, kb_settings = await settings_for(request, name)
    document = await worker.run(engine.document, doc_id)  # 404 for a document the index does not hold
    data, media_type = await worker.run(read_original, kb_settings.corpus_dir, doc_id, document["encoding"])
    return Response(data, media_type=media_type, headers=original_headers(doc_id, media_type))


@router.get("/documents/{doc_id:path}", tags=["knowledge base"])
async def show_document(doc_id: str, request: Request, worker: WorkerDep, kb: KbQuery = None) -> Response:
    """One document of knowledge base `kb`: its text as indexed, its chunks with character offsets (and pages),
    its tags, links and backlinks, and `original_url`, where the original file is."""
    name, engine = await engine_for(request, kb)
    document = safe_document(await worker.run(engine.document, doc_id))
    return json_response({**document, "original_url": doc_url(request, doc_id, name)})


@router.get("/glossary", tags=["knowledge base"])
async def glossary(request: Request, worker: WorkerDep, kb: KbQuery = None) -> Response:
    """Alias groups of knowledge base `kb` used for query expansion: `sources` says where each came from ("notes", "user",
    "notes+user"); `removed` lists what glossary.txt's "- …" lines took out."""
    _, engine = await engine_for(request, kb)
    return json_response(safe_strings(await worker.run(engine.glossary_report)))


@router.get("/stats", tags=["knowledge base"])
async def stats(
    request: Request, jobs: JobsDep, settings: SettingsDep, worker: WorkerDep, kb: KbQuery = None
) -> Response:
    """Knowledge base `kb`: index version and counts, backends, its latest ingest job and the upload limits
    (notes, and per format)."""
    name, engine = await engine_for(request, kb, require_index=False)
    info = await worker.run(engine.stats)
    limits = {"note": settings.max_upload_mb, "pdf": settings.max_pdf_mb, "docx": settings.max_docx_mb, "html": settings.max_html_mb}
    return json_response(
        {**info, "kb": name, "ingest_job": jobs.latest(name), "max_upload_mb": settings.max_upload_mb, "upload_limits_mb": limits}
    )


@router.post("/feedback", status_code=201, response_model=FeedbackEntry, tags=["feedback"])
async def add_feedback(body: FeedbackRequest, request: Request, store: FeedbackDep, worker: WorkerDep) -> Response:
    """Store a thumbs up/down (and optional comment) on an answer from knowledge base `kb`."""
    name = kb_name(request, body.kb)
    await worker.run(registry_of(request).get, name)  # 404 for an unknown knowledge base
    entry = await worker.run(
        store.add, body.rating, answer_id=body.answer_id, question=body.question, comment=body.comment, kb=name
    )
    return json_response(asdict(entry), 201)


@router.get("/feedback", response_model=FeedbackList, tags=["feedback"])
async def list_feedback(
    request: Request,
    store: FeedbackDep,
    worker: WorkerDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    kb: Annotated[
        str | None, Query(max_length=63, pattern=KB_PATTERN, description="Only this knowledge base's (default: all).")
    ] = None,
) -> Response:
    """Stored feedback, newest first (of every knowledge base, or of `kb`)."""
    name = kb_name(request, kb) if kb is not None else None
    entries = await worker.run(lambda: store.list(limit=limit, offset=offset, kb=name))
    return json_response({"feedback": [asdict(e) for e in entries]})


@router.delete("/feedback/{entry_id}", status_code=204, tags=["feedback"])
async def delete_feedback(entry_id: int, store: FeedbackDep, worker: WorkerDep) -> Response:
    """Delete one feedback entry."""
    await worker.run(store.delete, entry_id)
    return Response(status_code=204)
