"""The API's ASGI middleware: request ids, access log and metrics; bearer-key auth; the request body limit.

The request passes Edge -> (CORS) -> Auth -> BodyLimit -> routes; `create_app` adds them in that order.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag.api.responses import error_response
from rag.errors import PayloadTooLarge, Unauthorized
from rag.metrics import Metrics

log = logging.getLogger(__name__)
access_log = logging.getLogger("rag.api.access")

PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
MAX_HEAD_BYTES = 64 * 1024  # request line and headers together
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


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
    """`Authorization: Bearer <key>` on every path except the `public` ones (constant-time comparison)."""

    def __init__(self, app: ASGIApp, api_key: str, public: frozenset[str] = PUBLIC_PATHS) -> None:
        self.app = app
        self._key = api_key.encode()
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public or self._authorized(scope):
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


class BodyTimeout(StarletteHTTPException):
    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"the request body was not received within {seconds:g} seconds", {"Connection": "close"})


class BodyLimitMiddleware:
    """413 for bodies over the limit: at once from Content-Length, else while counting streamed bytes. 408 for a
    body not complete within `read_timeout` seconds of the request reaching the app (a client trickling it). 431
    for a request head over MAX_HEAD_BYTES."""

    def __init__(self, app: ASGIApp, limit: int, upload_limit: int, read_timeout: float | None = None) -> None:
        self.app = app
        self.limit = limit
        self.upload_limit = upload_limit
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        head += sum(len(name) + len(value) + 4 for name, value in scope["headers"])
        if head > MAX_HEAD_BYTES:  # one packet can carry a whole oversized head past the server's own count
            message = f"the request line and headers are larger than {MAX_HEAD_BYTES} bytes"
            await error_response(431, "headers_too_large", message, {"Connection": "close"})(scope, receive, send)
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
        body_done = False
        loop = asyncio.get_running_loop()
        deadline = None if self.read_timeout is None else loop.time() + self.read_timeout

        async def counting_receive() -> Message:
            nonlocal received, body_done
            if body_done or deadline is None:  # after the body, receive() only waits for a disconnect
                message = await receive()
            else:
                try:
                    message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    raise BodyTimeout(self.read_timeout or 0) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
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
        except BodyTimeout as exc:
            if started:
                raise
            await error_response(408, "request_timeout", exc.detail, {"Connection": "close"})(scope, receive, send)

    @staticmethod
    async def _reject(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the request body is larger than {limit} bytes"
        await error_response(413, PayloadTooLarge.code, message, {"Connection": "close"})(scope, receive, send)
