"""How `rag serve` runs the app: uvicorn with timeouts for slow and idle connections.

uvicorn closes an idle keep-alive connection (`keep_alive_seconds`) but never one whose request head trickles
in a byte at a time, or that connects and sends nothing (slowloris). `guarded_protocol` adds that: a connection
whose next request head is not complete `read_timeout_seconds` after it opened (or after its last response) is
answered 408 and closed, and a head over 64 KiB is answered 431. The body has its own deadline in the app
(`BodyLimitMiddleware`). Facing the internet, put a reverse proxy in front as well (README, docker-compose).
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from fastapi import FastAPI

from rag.api.middleware import MAX_HEAD_BYTES
from rag.config import Settings


def guarded_protocol(read_timeout: float, max_head_bytes: int = MAX_HEAD_BYTES) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools or h11, as uvicorn picks) with a deadline and a size cap on request heads."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    base: Any = AutoHTTPProtocol

    class GuardedHTTPProtocol(base):
        _head_timer: asyncio.TimerHandle | None = None
        _head_bytes = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            waiting = self._waiting_for_head()
            super().data_received(data)
            if not (waiting and self._waiting_for_head()):
                self._head_bytes = 0
                return
            self._head_bytes += len(data)
            if self._head_bytes > max_head_bytes:
                self._refuse(b"431 Request Header Fields Too Large")

        def _waiting_for_head(self) -> bool:
            cycle = getattr(self, "cycle", None)
            return cycle is None or cycle.response_complete

        def _arm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            self._head_bytes = 0
            self._head_timer = self.loop.call_later(read_timeout, self._expire)

        def _expire(self) -> None:
            self._head_timer = None
            if self._waiting_for_head():
                self._refuse(b"408 Request Timeout" if self._head_bytes else None)

        def _refuse(self, status: bytes | None) -> None:
            if self.transport.is_closing():
                return
            if status is not None:
                self.transport.write(b"HTTP/1.1 " + status + b"\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
            self.transport.close()

    return GuardedHTTPProtocol


def uvicorn_config(app: FastAPI, settings: Settings, host: str, port: int) -> uvicorn.Config:
    """The uvicorn configuration of `rag serve`."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        access_log=False,  # the app logs every request itself, with its request id
        http=guarded_protocol(settings.read_timeout_seconds),
        timeout_keep_alive=settings.keep_alive_seconds,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
    )


def serve(app: FastAPI, settings: Settings, host: str, port: int) -> None:
    """Run the app until interrupted."""
    uvicorn.Server(uvicorn_config(app, settings, host, port)).run()
