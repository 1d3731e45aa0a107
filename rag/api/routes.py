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
from dataclasses import asdict
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ingest.corpus import save_note
from rag.api.openai import chat_chunks, chat_completion, conversation_from, message_text, rough_tokens
from rag.api.responses import error_response, event_stream, json_response
from rag.api.schemas import (
    ERRORS,
    MODEL_ID,
    STREAMED,
    AskRequest,
    ChatCompletion,
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
from rag.api.workers import Worker, answer_events
from rag.config import Settings
from rag.engine import PICKUP_WAIT_SECONDS, Engine
from rag.errors import IndexNotReady, Overloaded, RagError
from rag.feedback import FeedbackEntry, FeedbackStore
from rag.jobs import IngestJobs
from rag.metrics import Metrics
from rag.retrieval import SearchResult
from rag.types import Answer, Turn

log = logging.getLogger(__name__)

NOT_READY_HINT = "run `rag ingest` (or POST /ingest) to build the index"
_FILENAME_PARAM = re.compile(r'filename="([^"]*)"', re.IGNORECASE)


def search_payload(result: SearchResult, explain: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "query": result.query,
        "mode": result.mode,
        "gate": asdict(result.gate),
        "hits": [asdict(h) for h in result.hits],
        "timings": result.timings,
    }
    if explain:
        data["explanation"] = result.explanation
    return data


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


async def handle_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "malformed_json", "the request body is not valid JSON")
    if errors and all(e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",) for e in errors):
        return error_response(400, "invalid_input", "the request body is empty: send a JSON object")
    parts = []
    for e in errors[:10]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return error_response(422, "validation_error", "; ".join(parts) or "invalid request")


async def handle_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 404 and exc.detail == "Not Found":
        message = f"no endpoint {request.method} {request.url.path}"
    elif status == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(status, _HTTP_CODES.get(status, "error"), message, dict(exc.headers or {}) or None)


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
    reason = engine.last_error or load_error or "no index is loaded"
    return IndexNotReady(reason if "rag ingest" in reason else f"{reason}: {NOT_READY_HINT}")


# --- routes ----------------------------------------------------------------------------------------------

router = APIRouter(responses=ERRORS)


@router.get("/healthz", tags=["ops"])
async def healthz() -> dict[str, str]:
    """Liveness: the process answers (no auth)."""
    return {"status": "ok"}


@router.get("/readyz", tags=["ops"])
async def readyz(request: Request, engine: EngineDep) -> dict[str, Any]:
    """Readiness: 200 once an index is loaded, else 503 with guidance (no auth)."""
    if not engine.ready and not await anyio.to_thread.run_sync(
        functools.partial(engine.load_if_published, wait=PICKUP_WAIT_SECONDS)
    ):
        raise not_ready(engine, request.app.state.load_error)
    return {"status": "ready", "version": engine.version}


@router.get("/metrics", tags=["ops"], response_class=Response)
async def metrics(registry: MetricsDep) -> Response:
    """Prometheus metrics."""
    body, content_type = registry.render()
    return Response(body, media_type=content_type)


@router.post("/ask", response_model=Answer, tags=["query"], responses=STREAMED)
async def ask(body: AskRequest, request: Request, engine: EngineDep, worker: WorkerDep) -> Response:
    """Answer a question with citations; `stream: true` (or Accept: text/event-stream) for SSE."""
    options = {
        "history": [Turn(t.role, t.content) for t in body.history],
        "top_k": body.top_k,
        "mode": body.mode,
        "explain": body.explain,
    }
    if body.stream or wants_event_stream(request):
        stream = await worker.stream(lambda: engine.ask_stream(body.question, **options))
        return event_stream(answer_events(stream, request))
    answer = await worker.run(engine.ask, body.question, **options)
    return json_response(asdict(answer))


@router.post("/search", response_model=SearchResponse, tags=["query"])
async def search(body: SearchRequest, engine: EngineDep, worker: WorkerDep) -> Response:
    """Ranked passages and the relevance decision, without an answer."""
    result = await worker.run(
        engine.search, body.query, top_k=body.top_k, mode=body.mode, explain=body.explain, expansion=body.expansion
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
    return json_response({"documents": await worker.run(engine.documents)})


@router.post("/documents", status_code=201, response_model=UploadResponse, tags=["knowledge base"])
async def upload_document(
    file: UploadFile,
    settings: SettingsDep,
    worker: WorkerDep,
    overwrite: Annotated[bool, Query(description="Replace a note of the same name.")] = False,
) -> Response:
    """Add a .md/.markdown/.txt note to the corpus (run POST /ingest afterwards to index it)."""
    data = await file.read()
    saved = await worker.run(
        save_note, settings.corpus_dir, upload_filename(file), data,
        max_bytes=int(settings.max_upload_mb * 1024 * 1024), overwrite=overwrite,
    )
    return json_response(saved, 201)


@router.get("/documents/{doc_id:path}", tags=["knowledge base"])
async def show_document(doc_id: str, engine: EngineDep, worker: WorkerDep) -> Response:
    """One note: its raw text and its chunks with character offsets."""
    return json_response(await worker.run(engine.document, doc_id))


@router.get("/glossary", tags=["knowledge base"])
async def glossary(engine: EngineDep, worker: WorkerDep) -> Response:
    """Alias groups used for query expansion."""
    return json_response({"groups": await worker.run(engine.glossary)})


@router.get("/stats", tags=["knowledge base"])
async def stats(engine: EngineDep, jobs: JobsDep, settings: SettingsDep, worker: WorkerDep) -> Response:
    """Index version and counts, backends, the latest ingest job and the upload limit."""
    info = await worker.run(engine.stats)
    return json_response({**info, "ingest_job": jobs.latest(), "max_upload_mb": settings.max_upload_mb})


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
async def chat_completions(body: ChatRequest, request: Request, engine: EngineDep, worker: WorkerDep) -> Response:
    """OpenAI-compatible chat: the last user message is the question, earlier ones the history."""
    question, history = conversation_from(body.messages)
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
