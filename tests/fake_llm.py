"""A real local HTTP server speaking the OpenAI chat-completions API, for LLM tests.

Start it with `with FakeLLM() as llm:`; point litellm at `llm.api_base` with model "openai/<anything>".
Every request is recorded (`llm.requests`, `llm.prompts()`); what the server answers is chosen per test with
`llm.behave(...)` (every request) or `llm.script(...)` (one behaviour per request, in order, then the default).

Behaviours (`Behaviour.kind`):
- "reply": a normal answer with `text`. JSON for non-streaming requests, SSE for `"stream": true` requests
  (split into `tokens` when given, else into small pieces of `text`).
- "error": HTTP `status` with an OpenAI-style error body.
- "slow": waits `delay` seconds before answering with `text` (to trip the client's timeout).
- "empty": a well-formed reply whose content is "".
- "garbage": HTTP 200 whose body is not JSON (or SSE lines that are not JSON).
- "drop": streams `tokens` and then cuts the connection mid-body (chunked encoding never terminated).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Kind = Literal["reply", "error", "slow", "empty", "garbage", "drop"]


@dataclass(frozen=True)
class Behaviour:
    """What the fake server does with one request."""

    kind: Kind = "reply"
    text: str = "这是一个测试答案。[1]"
    tokens: tuple[str, ...] = ()
    status: int = 500
    delay: float = 0.0


def reply(text: str, tokens: Sequence[str] = ()) -> Behaviour:
    """A normal answer (JSON or SSE, as the request asks)."""
    return Behaviour("reply", text=text, tokens=tuple(tokens))


def streaming(tokens: Sequence[str]) -> Behaviour:
    """An SSE answer made of exactly these deltas (a non-streaming request gets them joined)."""
    return Behaviour("reply", text="".join(tokens), tokens=tuple(tokens))


def http_error(status: int = 500) -> Behaviour:
    """An HTTP error with an OpenAI-style error body."""
    return Behaviour("error", status=status)


def slow(delay: float, text: str = "太慢了。[1]") -> Behaviour:
    """Answer only after `delay` seconds."""
    return Behaviour("slow", text=text, delay=delay)


def empty() -> Behaviour:
    """A well-formed reply with empty content."""
    return Behaviour("empty", text="")


def garbage() -> Behaviour:
    """HTTP 200 with a body that is not a chat completion."""
    return Behaviour("garbage")


def drop(tokens: Sequence[str]) -> Behaviour:
    """Stream these deltas, then cut the connection without finishing the body."""
    return Behaviour("drop", text="".join(tokens), tokens=tuple(tokens))


def cites_out_of_range(n_passages: int = 3) -> Behaviour:
    """A reply whose only citation points past the passages given (e.g. [9] with 3 passages)."""
    return reply(f"答案在这里。[{n_passages + 6}]")


@dataclass
class RecordedRequest:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)


class FakeLLM:
    """Threaded OpenAI-compatible server on a free local port."""

    def __init__(self, default: Behaviour | None = None, model: str = "fake-model") -> None:
        self.model = model
        self.default = default or reply("这是一个测试答案。[1]")
        self.requests: list[RecordedRequest] = []
        self._queue: list[Behaviour] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control
    @property
    def api_base(self) -> str:
        """Base URL to give litellm (`api_base=`)."""
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def litellm_model(self) -> str:
        """The model string litellm needs to reach this server."""
        return f"openai/{self.model}"

    def behave(self, behaviour: Behaviour) -> None:
        """Use `behaviour` for every request that no script entry covers."""
        with self._lock:
            self.default = behaviour
            self._queue.clear()

    def script(self, *behaviours: Behaviour) -> None:
        """Use these behaviours for the next requests, one each, then the default."""
        with self._lock:
            self._queue = list(behaviours)

    def prompts(self) -> list[str]:
        """All message contents of every recorded request, joined per request."""
        out = []
        for request in self.requests:
            messages = request.body.get("messages") or []
            out.append("\n".join(str(m.get("content", "")) for m in messages))
        return out

    def _next(self) -> Behaviour:
        with self._lock:
            return self._queue.pop(0) if self._queue else self.default

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> FakeLLM:
        """Bind a free port and serve in a daemon thread."""
        handler = _make_handler(self)
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; slow handlers notice and return at once."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _pieces(behaviour: Behaviour) -> list[str]:
    if behaviour.tokens:
        return list(behaviour.tokens)
    text = behaviour.text
    return [text[i : i + 4] for i in range(0, len(text), 4)] or [""]


def _completion(model: str, content: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": max(1, len(content)),
            "total_tokens": 10 + len(content),
        },
    }


def _chunk(model: str, cid: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _make_handler(fake: FakeLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

        def do_GET(self) -> None:
            """`/v1/models`, for clients that probe."""
            self._send_json(200, {"object": "list", "data": [{"id": fake.model, "object": "model"}]})

        def do_POST(self) -> None:
            """Record the request, then act out the selected behaviour."""
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                body = {"_raw": raw.decode("utf-8", "replace")}
            with fake._lock:
                fake.requests.append(RecordedRequest(self.path, dict(self.headers.items()), body))
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send_json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
                return
            behaviour = fake._next()
            stream = bool(body.get("stream"))
            model = str(body.get("model") or fake.model)

            if behaviour.kind == "slow":
                deadline = time.monotonic() + behaviour.delay
                while time.monotonic() < deadline and not fake._stop.is_set():
                    time.sleep(0.02)
                if fake._stop.is_set():
                    return
            if behaviour.kind == "error":
                self._send_json(
                    behaviour.status,
                    {"error": {"message": "fake upstream failure", "type": "server_error", "code": None}},
                )
                return
            if behaviour.kind == "garbage":
                payload = b"<html>this is not json {{{" if not stream else b"data: {not json at all\n\n"
                ctype = "application/json" if not stream else "text/event-stream"
                self._send_raw(200, ctype, payload)
                return
            content = "" if behaviour.kind == "empty" else behaviour.text
            if not stream:
                self._send_json(200, _completion(model, content))
                return
            pieces = [] if behaviour.kind == "empty" else _pieces(behaviour)
            self._send_sse(model, pieces, finish=behaviour.kind != "drop")

        # ------------------------------------------------------------ helpers
        def _send_json(self, status: int, payload: dict[str, Any]) -> None:
            self._send_raw(status, "application/json", json.dumps(payload, ensure_ascii=False).encode())

        def _send_raw(self, status: int, ctype: str, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()

        def _write_chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _send_sse(self, model: str, pieces: list[str], finish: bool) -> None:
            cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            events: Iterator[dict[str, Any]] = iter(
                [_chunk(model, cid, {"role": "assistant", "content": ""})]
                + [_chunk(model, cid, {"content": piece}) for piece in pieces if piece]
            )
            for event in events:
                self._write_chunk(f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode())
            if not finish:
                # Cut the connection mid-body: the chunked encoding is never terminated.
                self.close_connection = True
                self.wfile.flush()
                self.connection.shutdown(2)
                return
            self._write_chunk(f"data: {json.dumps(_chunk(model, cid, {}, 'stop'))}\n\n".encode())
            self._write_chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler
