"""Blocking engine work off the event loop: admission (`Worker`), thread-fed streams and the /ask events.

`Worker` runs engine calls in a bounded thread pool, refuses calls beyond its queue and gives each call a time
budget; `ThreadStream` carries the items of a blocking iterator (an answer being generated) from a worker thread
to the event loop, and `answer_events` turns them into the server-sent events of /ask.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from rag.api.shaping import safe_answer, safe_citation, text_stream_cleaner
from rag.errors import Overloaded, RagError, RequestTimeout

log = logging.getLogger(__name__)

T = TypeVar("T")


def _nothing() -> None:
    pass


class _Call(Generic[T]):
    """One call in a worker thread whose caller may stop waiting for it (over its time budget).

    The thread cannot be killed: a call abandoned while it runs gives its admission back (`release`) only when it
    has really ended, so abandoned work still counts against the queue; one abandoned before it started never runs.
    """

    def __init__(self, fn: Callable[[], T], release: Callable[[], None]) -> None:
        self._fn = fn
        self._release = release
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._state = "waiting"  # -> "running" -> "ended"; or "abandoned"

    def __call__(self) -> T:
        with self._lock:
            if self._state == "abandoned":
                raise RequestTimeout("the request ran out of time before it started")
            self._state = "running"
        try:
            return self._fn()
        finally:
            with self._lock:
                abandoned, self._state = self._state == "abandoned", "ended"
            if abandoned:
                with contextlib.suppress(RuntimeError):  # the event loop is gone, and the admission count with it
                    self._loop.call_soon_threadsafe(self._release)

    def finish(self) -> None:
        """The caller is done waiting (on the event loop): release now, or when the running thread ends."""
        with self._lock:
            running = self._state == "running"
            if self._state != "ended":
                self._state = "abandoned"
        if not running:
            self._release()


class ThreadStream(Generic[T]):
    """Items of a blocking iterator, produced in a worker thread and consumed on the event loop.

    `stop()` (called when the client goes away) makes the producer stop after its current item and
    close the iterator, so an LLM stream is not read to its end for nobody. With a `timeout`, an item not there
    by the deadline raises RequestTimeout, the producer is told to stop and its worker slot is given back.
    """

    def __init__(
        self,
        make: Callable[[], Iterator[T]],
        limiter: anyio.CapacityLimiter,
        *,
        timeout: float | None = None,
        release: Callable[[], None] = _nothing,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._stop = threading.Event()
        self._buffer: list[T] = []
        self._ended = False
        self._deadline = None if timeout is None else self._loop.time() + timeout
        call = _Call(functools.partial(self._produce, make), release)
        self._task = asyncio.ensure_future(
            anyio.to_thread.run_sync(call, limiter=limiter, abandon_on_cancel=True)
        )
        self._task.add_done_callback(lambda _: call.finish())

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
        if self._deadline is None:
            kind, value = await self._queue.get()
        else:
            try:
                kind, value = await asyncio.wait_for(self._queue.get(), max(0.0, self._deadline - self._loop.time()))
            except TimeoutError:
                self.stop()
                self._task.cancel()  # abandon the thread: its limiter slot is free at once
                raise RequestTimeout("the request took longer than its time budget; retry shortly") from None
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

    A call not done within `timeout` seconds (waiting included) is answered RequestTimeout (503 + Retry-After)
    and its thread's slot is given back to the others. The admitted count is only touched on the event loop, so
    it needs no lock.
    """

    def __init__(self, limit: int, queue: int = 0, timeout: float | None = None) -> None:
        self.limiter = anyio.CapacityLimiter(limit)
        self.capacity = limit + queue
        self.timeout = timeout
        self.admitted = 0  # running + waiting calls (a stream counts until its producer thread ends)

    def _admit(self) -> None:
        if self.admitted >= self.capacity:
            raise Overloaded(f"the server is busy ({self.admitted} requests in progress or queued); retry shortly")
        self.admitted += 1

    def _release(self, *_: object) -> None:
        self.admitted -= 1

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        self._admit()
        call = _Call(functools.partial(fn, *args, **kwargs), self._release)
        try:
            with anyio.move_on_after(self.timeout) as budget:
                return await anyio.to_thread.run_sync(call, limiter=self.limiter, abandon_on_cancel=True)
        finally:
            call.finish()
        assert budget.cancelled_caught
        raise RequestTimeout("the request took longer than its time budget; retry shortly")

    async def stream(self, make: Callable[[], Iterator[T]]) -> ThreadStream[T]:
        self._admit()
        try:
            stream = ThreadStream(make, self.limiter, timeout=self.timeout, release=self._release)
        except BaseException:
            self._release()
            raise
        await stream.prime()
        return stream


async def answer_events(stream: ThreadStream[tuple[str, Any]], request: Request) -> AsyncIterator[bytes]:
    """/ask events: `citations` (list), `token` ({"text"})…, `done` (the Answer), or `error`; all text made safe."""
    cleaner = text_stream_cleaner()
    try:
        async for kind, payload in stream:
            if kind == "citations":
                yield sse("citations", [asdict(safe_citation(c)) for c in payload])
            elif kind == "token":
                safe = cleaner.feed(payload)
                if safe:
                    yield sse("token", {"text": safe})
            else:
                answer = safe_answer(payload)
                rest = cleaner.flush(answer.text)
                if rest:
                    yield sse("token", {"text": rest})
                yield sse("done", asdict(answer))
            if await request.is_disconnected():
                break
    except RagError as exc:
        yield sse("error", error_body(exc.code, exc.message))
    except Exception:
        log.exception("answer stream failed")
        yield sse("error", error_body("internal_error", "internal server error"))
    finally:
        stream.stop()
