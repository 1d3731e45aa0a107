"""How responses leave the API: JSON (numpy values included), the one error shape, and server-sent events.

Every error body is `{"error": {"code": ..., "message": ...}}`; routes, middleware and exception handlers all
build it here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

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


def error_body(code: str, message: str, **extra: str | None) -> dict[str, dict[str, str | None]]:
    """The one error shape; `extra` adds fields some clients expect (OpenAI's `type` and `param`)."""
    return {"error": {"code": code, "message": message, **extra}}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: str | None
) -> Response:
    return json_response(error_body(code, message, **extra), status, headers)


SSE_DONE = b"data: [DONE]\n\n"


def sse(event: str | None, data: Any) -> bytes:
    """One server-sent event whose data is JSON on one line; `event=None` for OpenAI-style data-only events."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {dumps(data)}\n\n".encode()


def event_stream(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        body, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


# Formats a browser may show inline; anything else (a web page, a Word file) is offered as a download, so a saved
# page's scripts never run on the API's origin.
_INLINE = ("application/pdf", "text/plain", "text/markdown")


def original_url(doc_id: str, kb: str | None = None) -> str:
    """Where GET /documents/{doc_id}/original serves the document's file (add `#page=N` for a PDF page); `kb`
    names a knowledge base other than the default one."""
    url = f"/documents/{quote(doc_id)}/original"
    return f"{url}?kb={quote(kb, safe='')}" if kb else url


def original_headers(doc_id: str, media_type: str) -> dict[str, str]:
    """Content-Disposition (inline for PDF and text, else attachment) with the file name, and headers that keep
    a browser from running or sniffing what the file holds."""
    name = PurePosixPath(doc_id).name
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\;' else "_" for ch in name) or "document"
    kind = media_type.split(";")[0]
    disposition = "inline" if kind in _INLINE else "attachment"
    headers = {
        "Content-Disposition": f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}",
        "X-Content-Type-Options": "nosniff",
    }
    if kind != "application/pdf":  # a CSP on a PDF would keep the browser's own viewer from opening it
        headers["Content-Security-Policy"] = "sandbox" if disposition == "attachment" else "default-src 'none'"
    return headers
