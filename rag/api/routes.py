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
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from pydantic import BeforeValidator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from ingest.corpus import read_original, save_note
from rag.api.openai import chat_chunks, chat_completion, conversation_from, message_text, rough_tokens
from rag.api.responses import error_response, event_stream, json_response, original_headers, original_url
from rag.api.schemas import (
    ERRORS,
    MODEL_ID,
    STREAMED,
    UNPAIRED_SURROGATE,
    AskRequest,
    ChatCompletion,
    ChatMessage,
    ChatRequest,
    FeedbackList,
    FeedbackRequest,
    IngestRequest,
    JobResponse,
    ModelCard,
    ModelList,
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
from rag.jobs import IngestJobs
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


def check_chat_messages(messages: Sequence[ChatMessage], settings: Settings) -> None:
    """Every text of every chat message (content, or each text part) within the per-turn limit."""
    limit = settings.max_history_turn_chars
    for i, message in enumerate(messages):
        content = message.content
        texts = [content] if isinstance(content, str) else [part.text or "" for part in content or []]
        if any(len(text) > limit for text in texts):
            raise InvalidInput(f"messages.{i}.content is longer than {limit} characters (the limit per message)")


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
    parts = []
    for e in errors[:10]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return error_response(422, "validation_error", "; ".join(parts) or "invalid request")


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


def get_jobs(request: Request) -> IngestJobs:
    return request.app.state.jobs


def get_feedback(request: Request) -> FeedbackStore:
    return request.app.state.feedback


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
WorkerDep = Annotated[Worker, Depends(get_worker)]
JobsDep = Annotated[IngestJobs, Depends(get_jobs)]
FeedbackDep = Annotated[FeedbackStore, Depends(get_feedback)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


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
async def ask(
    body: AskRequest, request: Request, engine: EngineDep, worker: WorkerDep, settings: SettingsDep
) -> Response:
    """Answer a question with citations; `stream: true` (or Accept: text/event-stream) for SSE."""
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
async def search(body: SearchRequest, engine: EngineDep, worker: WorkerDep) -> Response:
    """Ranked passages and the relevance decision, without an answer."""
    result = await worker.run(
        engine.search, body.query, top_k=body.top_k, mode=body.mode, explain=body.explain, expansion=body.expansion,
        tags=body.tags, path_prefix=body.path_prefix,
    )
    return json_response(search_payload(result, body.explain))


@router.post("/ingest", status_code=202, response_model=JobResponse, tags=["ingest"])
async def start_ingest(jobs: JobsDep, body: IngestRequest | None = None) -> Response:
    """Start a background ingest of the corpus (one at a time; 409 while one runs)."""
    return json_response(jobs.start(full=bool(body and body.full)), 202)


@router.get("/ingest/{job_id}", response_model=JobResponse, tags=["ingest"])
async def ingest_status(job_id: str, jobs: JobsDep) -> Response:
    """State, progress and summary of an ingest job."""
    return json_response(jobs.get(job_id))


@router.get("/documents", tags=["knowledge base"])
async def list_documents(engine: EngineDep, worker: WorkerDep) -> Response:
    """The notes in the loaded index."""
    documents = await worker.run(engine.documents)
    return json_response({"documents": [{**safe_document(d), "original_url": original_url(d["doc_id"])} for d in documents]})


@router.post("/documents", status_code=201, response_model=UploadResponse, tags=["knowledge base"])
async def upload_document(
    request: Request,
    file: UploadFile,
    settings: SettingsDep,
    worker: WorkerDep,
    overwrite: Annotated[
        bool, Query(description="Replace a note of the same name (true or false)."), BeforeValidator(strict_flag)
    ] = False,
) -> Response:
    """Add a note (.md, .markdown, .txt), PDF, Word (.docx) or web page (.html, .htm) to the corpus; run POST /ingest
    afterwards to index it. The type is checked by content, each format has its own size limit, and only a file
    that ingest will read is saved (a PDF without a text layer, say, is refused with the reason)."""
    data = await file.read()
    mb = 1024 * 1024
    limits = {"pdf": int(settings.max_pdf_mb * mb), "docx": int(settings.max_docx_mb * mb), "html": int(settings.max_html_mb * mb)}
    saved = await worker.run(
        save_note, settings.corpus_dir, upload_filename(file), data,
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
async def document_original(doc_id: str, engine: EngineDep, settings: SettingsDep, worker: WorkerDep) -> Response:
    """The original file of a document in the knowledge base (a PDF opens at `#page=N`)."""
    document = await worker.run(engine.document, doc_id)  # 404 for a document the index does not hold
    data, media_type = await worker.run(read_original, settings.corpus_dir, doc_id, document["encoding"])
    return Response(data, media_type=media_type, headers=original_headers(doc_id, media_type))


@router.get("/documents/{doc_id:path}", tags=["knowledge base"])
async def show_document(doc_id: str, engine: EngineDep, worker: WorkerDep) -> Response:
    """One document: its text as indexed, its chunks with character offsets (and pages), its tags, links and
    backlinks, and `original_url`, where the original file is."""
    document = safe_document(await worker.run(engine.document, doc_id))
    return json_response({**document, "original_url": original_url(doc_id)})


@router.get("/glossary", tags=["knowledge base"])
async def glossary(engine: EngineDep, worker: WorkerDep) -> Response:
    """Alias groups used for query expansion: `sources` says where each came from ("notes", "user",
    "notes+user"); `removed` lists what glossary.txt's "- …" lines took out."""
    return json_response(safe_strings(await worker.run(engine.glossary_report)))


@router.get("/stats", tags=["knowledge base"])
async def stats(engine: EngineDep, jobs: JobsDep, settings: SettingsDep, worker: WorkerDep) -> Response:
    """Index version and counts, backends, the latest ingest job and the upload limits (notes, and per format)."""
    info = await worker.run(engine.stats)
    limits = {"note": settings.max_upload_mb, "pdf": settings.max_pdf_mb, "docx": settings.max_docx_mb, "html": settings.max_html_mb}
    return json_response(
        {**info, "ingest_job": jobs.latest(), "max_upload_mb": settings.max_upload_mb, "upload_limits_mb": limits}
    )


@router.post("/feedback", status_code=201, response_model=FeedbackEntry, tags=["feedback"])
async def add_feedback(body: FeedbackRequest, store: FeedbackDep, worker: WorkerDep) -> Response:
    """Store a thumbs up/down (and optional comment) on an answer."""
    entry = await worker.run(
        store.add, body.rating, answer_id=body.answer_id, question=body.question, comment=body.comment
    )
    return json_response(asdict(entry), 201)


@router.get("/feedback", response_model=FeedbackList, tags=["feedback"])
async def list_feedback(
    store: FeedbackDep,
    worker: WorkerDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
) -> Response:
    """Stored feedback, newest first."""
    entries = await worker.run(store.list, limit=limit, offset=offset)
    return json_response({"feedback": [asdict(e) for e in entries]})


@router.delete("/feedback/{entry_id}", status_code=204, tags=["feedback"])
async def delete_feedback(entry_id: int, store: FeedbackDep, worker: WorkerDep) -> Response:
    """Delete one feedback entry."""
    await worker.run(store.delete, entry_id)
    return Response(status_code=204)


@router.get("/v1/models", response_model=ModelList, tags=["openai"])
async def list_models() -> ModelList:
    """The one model this API serves (OpenAI-compatible)."""
    return ModelList(data=[ModelCard(id=MODEL_ID)])


@router.post("/v1/chat/completions", response_model=ChatCompletion, tags=["openai"], responses=STREAMED)
async def chat_completions(
    body: ChatRequest, request: Request, engine: EngineDep, worker: WorkerDep, settings: SettingsDep
) -> Response:
    """OpenAI-compatible chat: the last user message with text is the question, earlier ones the history."""
    check_chat_messages(body.messages, settings)
    question, history = conversation_from(body.messages)
    check_history(history, settings)
    created = int(time.time())
    prompt_tokens = sum(rough_tokens(message_text(m)) for m in body.messages)
    if body.stream:
        stream = await worker.stream(lambda: engine.ask_stream(question, history=history))
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        return event_stream(
            chat_chunks(
                stream, request, model=body.model, created=created, prompt_tokens=prompt_tokens,
                include_usage=include_usage,
            )
        )
    answer = await worker.run(engine.ask, question, history=history)
    return json_response(chat_completion(answer, body.model, created, prompt_tokens))
