"""The HTTP API: `create_app(settings)` builds a FastAPI app around one `Engine`.

Routes only parse, call the engine (in a bounded thread pool, so the event loop never blocks) and format.
Job management lives in `rag.jobs`, feedback storage in `rag.feedback`, metrics in `rag.metrics`.
Every error leaves the app in one shape: `{"error": {"code": ..., "message": ...}}` with a matching status.

Endpoints: /ask (JSON or server-sent events), /search, /ingest (background jobs), /documents (list, show,
upload), /glossary, /stats, /feedback, /healthz, /readyz, /metrics, and an OpenAI-compatible
/v1/chat/completions and /v1/models.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import hmac
import json
import logging
import os
import re
import tempfile
import threading
import time
import unicodedata
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Generic, Literal, TypeVar

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag.config import Settings
from rag.engine import PICKUP_WAIT_SECONDS, Engine
from rag.errors import (
    AlreadyExists,
    CorpusUnavailable,
    IndexNotReady,
    InvalidInput,
    Overloaded,
    PayloadTooLarge,
    RagError,
    Unauthorized,
)
from rag.feedback import FeedbackEntry, FeedbackStore
from rag.jobs import IngestJobs
from rag.metrics import Metrics
from rag.retrieval import SearchResult
from rag.types import Answer, Citation, RetrievalMode, Turn

log = logging.getLogger(__name__)
access_log = logging.getLogger("rag.api.access")

T = TypeVar("T")

MODEL_ID = "rag-notes"
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
NOTE_SUFFIXES = (".md", ".markdown", ".txt")
MAX_NAME_CHARS = 120
MULTIPART_OVERHEAD = 16 * 1024  # room for multipart headers and boundaries around an upload
NOT_READY_HINT = "run `rag ingest` (or POST /ingest) to build the index"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_UNSAFE_NAME_CHARS = frozenset('/\\:*?"<>|')
_FILENAME_PARAM = re.compile(r'filename="([^"]*)"', re.IGNORECASE)
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_ROUGH_TOKEN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[A-Za-z0-9_]+|[^\sA-Za-z0-9_]")
_SOURCES_TAIL = re.compile(r"\n\n(?:来源：|Sources:)\n(?:\d+\. [^\n]*(?:\n|$))+\s*$")



# --- request and response models -------------------------------------------------------------


# Request bodies take JSON types as the schema documents them: no lax coercion ({"full": 0.0}, {"top_k": "3"}).
STRICT = ConfigDict(strict=True)


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class HistoryTurn(BaseModel):
    model_config = STRICT

    role: Literal["user", "assistant"]
    content: str


class AskRequest(BaseModel):
    model_config = STRICT

    question: str
    history: list[HistoryTurn] = Field(default_factory=list, max_length=50)
    top_k: int | None = Field(None, ge=1, le=50)
    mode: RetrievalMode = "hybrid"
    stream: bool = False
    explain: bool = False


class SearchRequest(BaseModel):
    model_config = STRICT

    query: str
    top_k: int | None = Field(None, ge=1, le=50)
    mode: RetrievalMode = "hybrid"
    explain: bool = False
    expansion: bool | None = None


class SearchResponse(BaseModel):
    query: str
    mode: str
    gate: dict[str, Any]
    hits: list[dict[str, Any]]
    timings: dict[str, float]
    explanation: dict[str, Any] | None = None


class IngestRequest(BaseModel):
    model_config = STRICT

    full: bool = False


class JobProgress(BaseModel):
    done: int
    total: int


class JobResponse(BaseModel):
    job_id: str
    state: Literal["queued", "running", "succeeded", "failed"]
    full: bool
    progress: dict[str, JobProgress]
    summary: dict[str, Any] | None = None
    error: ErrorDetail | None = None
    reloaded: bool = False
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None


class UploadResponse(BaseModel):
    doc_id: str
    bytes: int
    encoding: str
    replaced: bool


class FeedbackRequest(BaseModel):
    model_config = STRICT

    answer_id: str | None = Field(None, max_length=200)
    question: str | None = Field(None, max_length=10_000)
    rating: Literal["up", "down", 1, -1]
    comment: str | None = Field(None, max_length=5_000)

    @field_validator("rating", mode="before")
    @classmethod
    def _not_a_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):  # true == 1 would otherwise match the literal 1
            raise ValueError("rating must be 'up', 'down', 1 or -1")
        return value


class FeedbackList(BaseModel):
    feedback: list[FeedbackEntry]


class ChatContentPart(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ChatContentPart] | None = None


class ChatRequest(BaseModel):
    """The subset of the OpenAI chat-completions request we use; other fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = MODEL_ID
    messages: list[ChatMessage] = Field(min_length=1, max_length=200)
    stream: bool = False
    stream_options: dict[str, Any] | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, int]
    citations: list[dict[str, Any]] = Field(default_factory=list)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = MODEL_ID


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 409, 413, 422, 500, 503)
}
# Streaming routes answer 200 with JSON or, when asked to stream, server-sent events (schema: one event).
STREAMED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON, or server-sent events when streaming is requested",
        "content": {
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "required": ["data"],
                    "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
                }
            }
        },
    }
}


# --- JSON and SSE formatting ---------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays, sets and paths, as plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, set | frozenset):
        return sorted(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, default=_json_default)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(data), status_code=status, headers=headers, media_type="application/json")


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(error_body(code, message), status, headers)


SSE_DONE = b"data: [DONE]\n\n"


def sse(event: str | None, data: Any) -> bytes:
    """One server-sent event whose data is JSON on one line; `event=None` for OpenAI-style data-only events."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {dumps(data)}\n\n".encode()


def event_stream(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        body, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


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


# --- blocking work off the event loop -------------------------------------------------------------


class ThreadStream(Generic[T]):
    """Items of a blocking iterator, produced in a worker thread and consumed on the event loop.

    `stop()` (called when the client goes away) makes the producer stop after its current item and
    close the iterator, so an LLM stream is not read to its end for nobody.
    """

    def __init__(self, make: Callable[[], Iterator[T]], limiter: anyio.CapacityLimiter) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._stop = threading.Event()
        self._buffer: list[T] = []
        self._ended = False
        self._task = asyncio.ensure_future(anyio.to_thread.run_sync(self._produce, make, limiter=limiter))

    def _put(self, kind: str, value: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is gone: nobody is listening any more
            self._stop.set()

    def _produce(self, make: Callable[[], Iterator[T]]) -> None:
        try:
            iterator = make()
            try:
                for item in iterator:
                    self._put("item", item)
                    if self._stop.is_set():
                        break
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:  # handed to the consumer, which decides how to report it
            self._put("error", exc)
        else:
            self._put("end", None)

    async def prime(self) -> None:
        """Wait for the first item, so errors raised before any output surface as ordinary HTTP errors."""
        try:
            self._buffer.append(await self._next())
        except StopAsyncIteration:
            self._ended = True

    async def _next(self) -> T:
        kind, value = await self._queue.get()
        if kind == "error":
            raise value
        if kind == "end":
            raise StopAsyncIteration
        return value

    def __aiter__(self) -> ThreadStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._buffer:
            return self._buffer.pop(0)
        if self._ended:
            raise StopAsyncIteration
        return await self._next()

    def stop(self) -> None:
        self._stop.set()


class Worker:
    """Runs engine calls in threads, at most `limit` at once; up to `queue` further calls wait their turn and
    any beyond that are refused at once (Overloaded: 503 + Retry-After) instead of piling up without bound.

    The admitted count is only touched on the event loop, so it needs no lock.
    """

    def __init__(self, limit: int, queue: int = 0) -> None:
        self.limiter = anyio.CapacityLimiter(limit)
        self.capacity = limit + queue
        self.admitted = 0  # running + waiting calls (a stream counts until its producer thread ends)

    def _admit(self) -> None:
        if self.admitted >= self.capacity:
            raise Overloaded(f"the server is busy ({self.admitted} requests in progress or queued); retry shortly")
        self.admitted += 1

    def _release(self, *_: object) -> None:
        self.admitted -= 1

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        self._admit()
        try:
            return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=self.limiter)
        finally:
            self._release()

    async def stream(self, make: Callable[[], Iterator[T]]) -> ThreadStream[T]:
        self._admit()
        try:
            stream = ThreadStream(make, self.limiter)
        except BaseException:
            self._release()
            raise
        stream._task.add_done_callback(self._release)
        await stream.prime()
        return stream


async def answer_events(stream: ThreadStream[tuple[str, Any]], request: Request) -> AsyncIterator[bytes]:
    """/ask events: `citations` (list), `token` ({"text"})…, `done` (the Answer), or `error`."""
    try:
        async for kind, payload in stream:
            if kind == "citations":
                yield sse("citations", [asdict(c) for c in payload])
            elif kind == "token":
                yield sse("token", {"text": payload})
            else:
                yield sse("done", asdict(payload))
            if await request.is_disconnected():
                break
    except RagError as exc:
        yield sse("error", error_body(exc.code, exc.message))
    except Exception:
        log.exception("answer stream failed")
        yield sse("error", error_body("internal_error", "internal server error"))
    finally:
        stream.stop()


# --- uploads ---------------------------------------------------------------------------------------


def check_note_name(filename: str | None) -> str:
    """The upload's file name if it is a plain, safe note name; InvalidInput otherwise."""
    if filename is None or not filename.strip():
        raise InvalidInput("the file name is empty")
    name = filename
    if len(name) > MAX_NAME_CHARS:
        raise InvalidInput(f"the file name is longer than {MAX_NAME_CHARS} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
        raise InvalidInput("the file name contains control characters")
    if any(ch in _UNSAFE_NAME_CHARS for ch in name):
        raise InvalidInput('the file name must be a plain name without directories or any of /\\:*?"<>|')
    if name != name.strip() or name.startswith("."):
        raise InvalidInput("the file name must not start with a dot or start/end with spaces")
    if PurePosixPath(name).suffix.lower() not in NOTE_SUFFIXES:
        raise InvalidInput(f"only {', '.join(NOTE_SUFFIXES)} notes can be uploaded")
    return name


def upload_filename(file: UploadFile) -> str | None:
    """The file name as the client sent it. python-multipart turns `C:\\dir\\x.md` into `x.md`; we
    want to refuse names with backslashes instead of guessing, so the raw parameter wins when it has one."""
    sent = _FILENAME_PARAM.search(file.headers.get("content-disposition", ""))
    return sent.group(1) if sent and "\\" in sent.group(1) else file.filename


def decode_note(data: bytes) -> str:
    """The encoding a note decodes with (UTF-8, else GB18030); InvalidInput for binary or undecodable data."""
    if b"\x00" in data:
        raise InvalidInput("the file is not text (it contains NUL bytes)")
    for encoding in ("utf-8-sig" if data.startswith(b"\xef\xbb\xbf") else "utf-8", "gb18030"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        controls = sum(1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\t\n\r\f\v")
        if controls > max(2, len(text) // 100):
            raise InvalidInput("the file does not look like text (too many control characters)")
        return encoding
    raise InvalidInput("the file is neither UTF-8 nor GB18030 text")


def save_note(corpus_dir: Path, filename: str | None, data: bytes, *, max_bytes: int, overwrite: bool) -> dict:
    """Write an uploaded note into the corpus atomically (temp file + rename); nothing is half-written."""
    name = check_note_name(filename)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"the file is {len(data)} bytes; the limit is {max_bytes}")
    if not data.strip():
        raise InvalidInput("the file is empty")
    encoding = decode_note(data)
    corpus = Path(corpus_dir)
    if not corpus.is_dir():
        raise CorpusUnavailable(f"the corpus directory {corpus} does not exist")
    target = corpus / name
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise AlreadyExists(f"{name} exists and is not a regular file")
    existed = target.exists()
    if existed and not overwrite:
        raise AlreadyExists(f"{name} already exists; pass ?overwrite=true to replace it")
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=corpus, prefix=".upload-", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        if overwrite:
            os.replace(tmp, target)
        else:
            _link_exclusive(tmp, target, name)
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise CorpusUnavailable(f"the corpus directory is not writable ({exc.strerror})") from exc
        raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return {"doc_id": name, "bytes": len(data), "encoding": encoding, "replaced": existed and overwrite}


def _link_exclusive(tmp: str, target: Path, name: str) -> None:
    """Publish `tmp` as `target` only if `target` does not exist (no race between two uploads)."""
    try:
        os.link(tmp, target)
    except FileExistsError as exc:
        raise AlreadyExists(f"{name} already exists; pass ?overwrite=true to replace it") from exc
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        if target.exists():  # hard links unsupported: check-then-rename is the best we can do
            raise AlreadyExists(f"{name} already exists; pass ?overwrite=true to replace it") from exc
        os.replace(tmp, target)


# --- OpenAI-compatible chat --------------------------------------------------------------------------


def _message_text(message: ChatMessage) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    return "".join(part.text or "" for part in message.content if part.type in ("text", "input_text"))


def strip_sources(text: str) -> str:
    """An assistant message without the sources list this API appended to it."""
    return _SOURCES_TAIL.sub("", text)


def conversation_from(messages: Sequence[ChatMessage]) -> tuple[str, list[Turn]]:
    """The question (last user message) and the history (earlier user/assistant messages)."""
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last_user is None:
        raise InvalidInput("the conversation has no user message")
    history = [
        Turn(m.role, strip_sources(_message_text(m)) if m.role == "assistant" else _message_text(m))
        for m in messages[:last_user]
        if m.role in ("user", "assistant") and _message_text(m).strip()
    ]
    return _message_text(messages[last_user]), history


def sources_text(answer: Answer) -> str:
    """The numbered source list appended to OpenAI-style answers ("n. document › heading")."""
    if not answer.citations:
        return ""
    header = "来源：" if _CJK.search(answer.question) else "Sources:"
    lines = [
        f"{c.number}. " + " › ".join([c.document, *c.heading_path]) for c in sorted(answer.citations, key=_num)
    ]
    return "\n\n" + header + "\n" + "\n".join(lines)


def _num(citation: Citation) -> int:
    return citation.number


def rough_tokens(text: str) -> int:
    """A rough token count (CJK characters, words, punctuation) for the usage fields."""
    return len(_ROUGH_TOKEN.findall(text))


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_completion(answer: Answer, model: str, created: int, prompt_tokens: int) -> dict[str, Any]:
    content = answer.text + sources_text(answer)
    return {
        "id": f"chatcmpl-{answer.answer_id or uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": _usage(prompt_tokens, rough_tokens(content)),
        "citations": [asdict(c) for c in answer.citations],
    }


async def chat_chunks(
    stream: ThreadStream[tuple[str, Any]],
    request: Request,
    *,
    model: str,
    created: int,
    prompt_tokens: int,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """OpenAI `chat.completion.chunk` events, ending with `data: [DONE]`."""
    chunk_id = f"chatcmpl-{uuid.uuid4().hex}"

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        body = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return sse(None, body)

    completion = 0
    try:
        yield chunk({"role": "assistant", "content": ""})
        async for kind, payload in stream:
            if kind == "token" and payload:
                completion += rough_tokens(payload)
                yield chunk({"content": payload})
            elif kind == "done":
                tail = sources_text(payload)
                if tail:
                    completion += rough_tokens(tail)
                    yield chunk({"content": tail})
                yield chunk({}, "stop", citations=[asdict(c) for c in payload.citations])
                if include_usage:
                    yield sse(
                        None,
                        {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model,
                         "choices": [], "usage": _usage(prompt_tokens, completion)},
                    )
            if await request.is_disconnected():
                return
        yield SSE_DONE
    except RagError as exc:
        yield sse(None, error_body(exc.code, exc.message))
    except Exception:
        log.exception("chat stream failed")
        yield sse(None, error_body("internal_error", "internal server error"))
    finally:
        stream.stop()


# --- middleware --------------------------------------------------------------------------------------


class EdgeMiddleware:
    """Outermost layer: request id header, access log, metrics, and a last-resort 500 in the error shape."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error in %s %s (request %s)", scope["method"], scope["path"], request_id)
            if response_started:
                raise
            await error_response(500, "internal_error", "internal server error")(scope, receive, send_with_id)
        finally:
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None)
            self.metrics.observe_request(scope["method"], route, status, elapsed)
            client = scope.get("client")
            access_log.info(
                '%s "%s %s" %d %.1fms rid=%s',
                client[0] if client else "-", scope["method"], scope["path"], status, elapsed * 1000, request_id,
            )


class AuthMiddleware:
    """`Authorization: Bearer <key>` on every path except the health probes (constant-time comparison)."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        response = error_response(
            401, Unauthorized.code, "missing or wrong API key: send `Authorization: Bearer <key>`",
            {"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._key)


class BodyTooLarge(StarletteHTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


class BodyLimitMiddleware:
    """413 for bodies over the limit: at once from Content-Length, else while counting streamed bytes."""

    def __init__(self, app: ASGIApp, limit: int, upload_limit: int) -> None:
        self.app = app
        self.limit = limit
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_upload = scope["method"] == "POST" and scope["path"].rstrip("/") == "/documents"
        limit = self.upload_limit if is_upload else self.limit
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not declared.isdigit():
                await error_response(400, "bad_request", "invalid Content-Length header")(scope, receive, send)
                return
            if int(declared) > limit:
                await self._reject(limit, scope, receive, send)
                return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await self._reject(limit, scope, receive, send)

    @staticmethod
    async def _reject(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the request body is larger than {limit} bytes"
        await error_response(413, PayloadTooLarge.code, message, {"Connection": "close"})(scope, receive, send)


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
    prompt_tokens = sum(rough_tokens(_message_text(m)) for m in body.messages)
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


# --- the app -------------------------------------------------------------------------------------------


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
        app.state.worker = Worker(settings.max_concurrent_requests, settings.max_queued_requests)
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
        poll = asyncio.create_task(_poll_index(eng, settings.index_poll_seconds))
        try:
            yield
        finally:
            poll.cancel()

    app = FastAPI(
        title="rag-notes",
        summary="Question answering with citations over a knowledge base of notes.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.include_router(router)

    handlers: list[tuple[type[Exception], Callable[[Request, Exception], Awaitable[Response]]]] = [
        (RagError, handle_rag_error),
        (RequestValidationError, handle_validation_error),
        (StarletteHTTPException, handle_http_error),
        (Exception, handle_unexpected),
    ]
    for exc_type, handler in handlers:
        app.add_exception_handler(exc_type, handler)

    # Added innermost first: the request passes Edge -> CORS -> Auth -> BodyLimit -> routes.
    upload_limit = int(settings.max_upload_mb * 1024 * 1024) + MULTIPART_OVERHEAD
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes, upload_limit=upload_limit)
    if api_key:
        app.add_middleware(AuthMiddleware, api_key=api_key)
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
