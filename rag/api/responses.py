"""How responses leave the API: JSON (numpy values included), the one error shape, and server-sent events.

Every error body is `{"error": {"code": ..., "message": ...}}`; routes, middleware and exception handlers all
build it here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.responses import Response, StreamingResponse


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
