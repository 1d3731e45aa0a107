"""Blocking engine work off the event loop: admission (`Worker`), thread-fed streams and the /ask events.

`Worker` runs engine calls in a bounded thread pool and refuses calls beyond its queue; `ThreadStream` carries
the items of a blocking iterator (an answer being generated) from a worker thread to the event loop, and
`answer_events` turns them into the server-sent events of /ask.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict
from typing import Any, Generic, TypeVar

import anyio
import anyio.to_thread
from fastapi import Request

from rag.api.responses import error_body, sse
from rag.errors import Overloaded, RagError

log = logging.getLogger(__name__)

T = TypeVar("T")


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
