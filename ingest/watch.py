"""`rag ingest --watch`: re-ingest, debounced, whenever notes in the corpus change."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from rag.types import CONVERTED_SUFFIXES, NOTE_SUFFIXES

WATCHED = NOTE_SUFFIXES + CONVERTED_SUFFIXES  # notes, and the PDF, Word and HTML files ingest converts


def watch_corpus(
    corpus_dir: Path,
    on_change: Callable[[], None],
    *,
    debounce: float = 1.5,
    stop: threading.Event | None = None,
) -> None:
    """Call `on_change` once the corpus has been quiet for `debounce` seconds after a change to a note.

    Blocks until `stop` is set (or forever); errors raised by `on_change` propagate to the caller.
    """
    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    stop = stop or threading.Event()
    last_change: list[float] = []

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            paths = [str(event.src_path), str(getattr(event, "dest_path", "") or "")]
            if event.is_directory or any(p.lower().endswith(WATCHED) for p in paths):
                last_change.append(time.monotonic())

    observer = Observer()
    observer.schedule(Handler(), str(corpus_dir), recursive=True)
    observer.start()
    try:
        while not stop.wait(0.2):
            if last_change and time.monotonic() - last_change[-1] >= debounce:
                last_change.clear()
                on_change()
    finally:
        observer.stop()
        observer.join(timeout=5)
