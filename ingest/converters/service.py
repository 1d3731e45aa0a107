"""Turning one non-note file (PDF, Word, HTML) into a `Document`: type by content, size limit per type, a
conversion cache, and the worker process.

Conversions are cached by (sha256 of the original bytes, converter name, converter version), so an unchanged
file is never converted twice and upgrading one converter re-converts only its format. A file that a converter
refuses is cached with its reason too. One stopped by the time or memory limit is cached under those limits: it
is tried again when they change, or on a full ingest, not on every run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
import stat
import threading
from pathlib import Path, PurePosixPath

from ingest.converters import ConversionError, Converted, Converter, converter_for
from ingest.converters.worker import ConverterProcess, LimitExceeded
from rag.config import Settings
from rag.types import Document

SNIFF_BYTES = 4096


def size_limit_mb(settings: Settings, converter: str) -> float:
    """The largest file of this format ingest and upload accept."""
    return {"pdf": settings.max_pdf_mb, "docx": settings.max_docx_mb, "html": settings.max_html_mb}.get(
        converter, settings.max_file_mb
    )


def check_type(converter: Converter, head: bytes) -> None:
    """ConversionError unless the content looks like the format its name says (the type is checked by content)."""
    if not converter.sniff(head[:SNIFF_BYTES]):
        raise ConversionError(f"the content is not {converter.name.upper()} (a {converter.suffixes[0]} name on other data)")


class ConversionCache:
    """A persistent map from (sha256, converter, version) to a conversion or the reason it failed."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS conversions (key TEXT PRIMARY KEY, result TEXT NOT NULL)")
        self._db.commit()
        self._lock = threading.Lock()

    @staticmethod
    def key(sha256: str, converter: Converter) -> str:
        return f"{sha256}:{converter.name}:{converter.version}"

    def get(self, key: str) -> Converted | str | None:
        with self._lock:
            row = self._db.execute("SELECT result FROM conversions WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        data = json.loads(row[0])
        if "error" in data:
            return str(data["error"])
        return Converted(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def put(self, key: str, result: Converted | str) -> None:
        data = {"error": result} if isinstance(result, str) else dataclasses.asdict(result)
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO conversions (key, result) VALUES (?, ?)", (key, json.dumps(data, ensure_ascii=False))
            )
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()


class ConversionService:
    """Converts PDF, Word and HTML files through the cache and the worker process. Thread-safe; close it."""

    def __init__(self, settings: Settings, *, retry_limits: bool = False) -> None:
        self.settings = settings
        self.retry_limits = retry_limits  # try files that hit a limit before again (a full ingest)
        self._process = ConverterProcess(timeout=settings.convert_timeout, memory_mb=settings.convert_memory_mb)
        self._cache: ConversionCache | None = None
        self._cache_lock = threading.Lock()

    def __enter__(self) -> ConversionService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._process.close()
        with self._cache_lock:
            if self._cache is not None:
                self._cache.close()
                self._cache = None

    def _conversions(self) -> ConversionCache:
        with self._cache_lock:
            if self._cache is None:
                self._cache = ConversionCache(self.settings.cache_dir / "conversions.sqlite")
            return self._cache

    def convert(self, converter: Converter, data: bytes, path: str) -> Converted:
        """The file's conversion, from the cache or the worker; ConversionError with the reason it failed."""
        cache = self._conversions()
        key = cache.key(hashlib.sha256(data).hexdigest(), converter)
        limited = f"{key}:limits:{self._process.timeout:g}s:{self._process.memory_mb}MB"
        for cached in (cache.get(key), None if self.retry_limits else cache.get(limited)):
            if isinstance(cached, str):
                raise ConversionError(cached)
            if cached is not None:
                return cached
        try:
            converted = self._process.convert(converter.name, data, path)
        except LimitExceeded as exc:
            cache.put(limited, str(exc))
            raise
        except ConversionError as exc:
            cache.put(key, str(exc))
            raise
        cache.put(key, converted)
        return converted

    def document(self, path: Path, doc_id: str) -> Document:
        """A corpus file as a `Document`; ConversionError (a ValueError) with the reason it is skipped."""
        converter = converter_for(doc_id)
        if converter is None:
            raise ConversionError("no converter for this file type")
        limit_mb = size_limit_mb(self.settings, converter.name)
        data, mtime = _read(path, int(limit_mb * 1024 * 1024))
        if len(data) > limit_mb * 1024 * 1024:
            raise ConversionError(f"too large: over the {limit_mb:g} MB limit for {converter.name.upper()} files")
        if not data:
            raise ConversionError("empty file (no bytes)")
        check_type(converter, data)
        converted = self.convert(converter, data, doc_id)
        return as_document(converted, converter, doc_id, data, mtime)


def as_document(converted: Converted, converter: Converter, doc_id: str, data: bytes, mtime: float) -> Document:
    """The `Document` of a conversion (title: the converter's, else the first top-level heading, else the name)."""
    from ingest.loading import document_title

    return Document(
        doc_id=doc_id,
        title=converted.title or document_title(converted.text, PurePosixPath(doc_id).stem),
        text=converted.text,
        sha256=hashlib.sha256(data).hexdigest(),
        encoding=converted.encoding,
        size_bytes=len(data),
        mtime=mtime,
        converter=converter.name,
        tags=converted.tags,
        aliases=converted.aliases,
        links=converted.links,
        page_starts=converted.page_starts,
    )


def _read(path: Path, max_bytes: int) -> tuple[bytes, float]:
    """The file's bytes (one past `max_bytes` at most) without following a link swapped in since the walk."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ConversionError("not a regular file")
        return handle.read(max_bytes + 1), info.st_mtime
