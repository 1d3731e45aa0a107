"""The index on local disk: versioned, atomic publish (`IndexStore.publish`), verified load, and GC.

Layout under `index_dir`:

    CURRENT                  names the published version; replaced atomically (tmp + fsync + os.replace)
    versions/<version>/      one complete index: manifest.json, chunks.sqlite, vectors.faiss, keyword/,
                             glossary.json, terms.npy
    versions/.tmp-<name>/    a version being built (or being deleted); debris when its writer died
    .lock                    flock held by the writer (see `WriteLock`)

A load checks every file's size (and, with `verify`, its sha256) against the manifest before opening it.
A publish keeps one older version: the published one, or when that is damaged the newest intact one, which
`load_fallback` serves meanwhile (so the ingest that repairs the index does not delete it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import sqlite3
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from rag.errors import IndexCorrupted, IndexNotReady
from rag.index.durable import fsync_dir, fsync_file, remove_tree, write_text_durably
from rag.index.keyword import KeywordBackend, choose_keyword_backend, load_keyword_index, new_keyword_index
from rag.index.loaded import LoadedIndex, write_chunks_sqlite
from rag.index.lock import WriteLock, lock_held_here, unless_busy
from rag.index.manifest import (
    CURRENT_FILE,
    FORMAT_VERSION,
    GLOSSARY_FILE,
    KEYWORD_DIR,
    MANIFEST_FILE,
    READER_TEXTS_FILE,
    READER_VECTORS_FILE,
    REINGEST,
    SQLITE_FILE,
    TERM_VECTORS_FILE,
    TMP_PREFIX,
    VECTORS_FILE,
    VERSIONS_DIR,
    IndexBuild,
    Manifest,
    file_sha256,
    version_files,
)
from rag.index.vectors import FaissVectors, VectorIndexKind, choose_vector_index, write_faiss

if TYPE_CHECKING:
    from rag.config import Settings

log = logging.getLogger(__name__)

# Stages reported to `publish(on_stage=...)`, in order.
PUBLISH_STAGES = (
    "publish:tmp_created",
    "publish:files_written",
    "publish:manifest_written",
    "publish:renamed",
    "publish:switched",
    "publish:done",
)

StageHook = Callable[[str], None]


class IndexStore:
    """Publishes and loads index versions under `index_dir`."""

    def __init__(
        self,
        index_dir: Path,
        *,
        keyword_backend: KeywordBackend | str = "auto",
        vector_index: VectorIndexKind | str = "auto",
        hnsw_m: int = 32,
        hnsw_ef_search: int = 128,
    ) -> None:
        self.index_dir = Path(index_dir)
        self.versions_dir = self.index_dir / VERSIONS_DIR
        self.keyword_backend = keyword_backend
        self.vector_index = vector_index
        self.hnsw_m = hnsw_m
        self.hnsw_ef_search = hnsw_ef_search
        choose_keyword_backend(keyword_backend, 0)
        choose_vector_index(vector_index, 0)

    @classmethod
    def from_settings(cls, settings: Settings, *, index_dir: Path | None = None) -> IndexStore:
        """Build from a `rag.config.Settings`; `index_dir` overrides `settings.index_dir` (e.g. a scaled copy)."""
        return cls(
            settings.index_dir if index_dir is None else index_dir,
            keyword_backend=settings.keyword_backend,
            vector_index=settings.vector_index,
            hnsw_m=settings.hnsw_m,
            hnsw_ef_search=settings.hnsw_ef_search,
        )

    # -- reading --------------------------------------------------------------------------------------

    def current_version(self) -> str | None:
        """The published version named by CURRENT, or None when nothing is published."""
        try:
            name = (self.index_dir / CURRENT_FILE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise IndexCorrupted(
                f"{self.index_dir / CURRENT_FILE} is unreadable ({exc}), {REINGEST}"
            ) from exc
        if not _valid_version_name(name):
            raise IndexCorrupted(f"{self.index_dir / CURRENT_FILE} names no valid version, {REINGEST}")
        return name

    def published_manifest(self) -> Manifest | None:
        """The published version's manifest, read without opening the index; None when nothing is published."""
        version = self.current_version()
        return None if version is None else self._read_manifest(self.versions_dir / version)

    def list_versions(self) -> list[str]:
        """Complete version directories on disk (published now or one back), sorted by name."""
        if not self.versions_dir.is_dir():
            return []
        return sorted(
            p.name for p in self.versions_dir.iterdir() if p.is_dir() and _valid_version_name(p.name)
        )

    def load(self, *, verify: bool = True) -> LoadedIndex:
        """Open the published version; IndexNotReady when none, IndexCorrupted when it fails its checks.

        Never falls back to an older version: the caller decides whether to keep serving what it has, or to
        ask for `load_fallback`.
        """
        version = self.current_version()
        if version is None:
            raise IndexNotReady(f"no index yet: {REINGEST}")
        return self.load_version(version, verify=verify)

    def load_fallback(self) -> LoadedIndex | None:
        """The newest intact version but the published one, or None: what to serve while that one is damaged."""
        version = self._first_intact(self._others_newest_first())
        return None if version is None else self.load_version(version, verify=False)  # just verified

    def _others_newest_first(self) -> list[str]:
        current = self._current_or_none()
        return [v for v in reversed(self.list_versions()) if v != current]  # names start with a UTC time

    def _first_intact(self, versions: list[str]) -> str | None:
        """The first of `versions` whose files all match their manifest's sizes and sha256."""
        for version in versions:
            try:
                self._check_files(self.versions_dir / version, self._read_manifest(self.versions_dir / version), verify=True)
                return version
            except IndexCorrupted as exc:
                log.warning("index version %s fails its checks: %s", version, exc.message)
        return None

    def previous(self, *, verify: bool = True) -> LoadedIndex | None:
        """The currently published index for an incremental ingest, or None when missing or corrupted."""
        try:
            return self.load(verify=verify)
        except IndexNotReady as exc:
            if isinstance(exc, IndexCorrupted):
                log.warning("ignoring the published index: %s", exc.message)
            return None

    def load_version(self, version: str, *, verify: bool = True) -> LoadedIndex:
        """Open one version directory; `verify` checks the sha256 of every file (sizes are always checked)."""
        if not _valid_version_name(version):
            raise IndexCorrupted(f"invalid index version name {version!r}, {REINGEST}")
        path = self.versions_dir / version
        if not path.is_dir():
            raise IndexCorrupted(f"index version {version} is missing from {self.versions_dir}, {REINGEST}")
        manifest = self._read_manifest(path)
        self._check_files(path, manifest, verify=verify)
        return self._open(path, manifest)

    def _read_manifest(self, path: Path) -> Manifest:
        try:
            text = (path / MANIFEST_FILE).read_text(encoding="utf-8")
            manifest = Manifest.from_json(text)
        except FileNotFoundError as exc:
            raise IndexCorrupted(f"index {path.name}: manifest.json is missing, {REINGEST}") from exc
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise IndexCorrupted(
                f"index {path.name}: manifest.json is unreadable ({exc}), {REINGEST}"
            ) from exc
        if manifest.format_version != FORMAT_VERSION:
            raise IndexCorrupted(
                f"index {path.name} has format {manifest.format_version}, this build reads {FORMAT_VERSION}: "
                f"{REINGEST}"
            )
        if manifest.version != path.name:
            raise IndexCorrupted(f"index {path.name}: manifest names version {manifest.version}, {REINGEST}")
        for required in (SQLITE_FILE, VECTORS_FILE, GLOSSARY_FILE, f"{KEYWORD_DIR}/meta.json"):
            if required not in manifest.checksums:
                raise IndexCorrupted(f"index {path.name}: manifest does not list {required}, {REINGEST}")
        return manifest

    @staticmethod
    def _check_files(path: Path, manifest: Manifest, *, verify: bool) -> None:
        for rel, expected in manifest.checksums.items():
            file = path / rel
            if not _safe_relative(rel) or not file.is_file():
                raise IndexCorrupted(f"index {path.name}: {rel} is missing, {REINGEST}")
            size = file.stat().st_size
            if size != manifest.sizes[rel]:
                raise IndexCorrupted(
                    f"index {path.name}: size mismatch in {rel} ({size} bytes, expected "
                    f"{manifest.sizes[rel]}; truncated?), {REINGEST}"
                )
            if verify and file_sha256(file) != expected:
                raise IndexCorrupted(f"index {path.name}: checksum mismatch in {rel}, {REINGEST}")

    def _open(self, path: Path, manifest: Manifest) -> LoadedIndex:
        n = int(manifest.counts.get("chunks", -1))
        db: sqlite3.Connection | None = None
        stage = SQLITE_FILE
        try:
            uri = f"file:{urllib.parse.quote(str(path / SQLITE_FILE))}?mode=ro&immutable=1"
            db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            count, lo, hi = db.execute("SELECT COUNT(*), MIN(row), MAX(row) FROM chunks").fetchone()
            if count != n or (n > 0 and (lo != 0 or hi != n - 1)):
                raise ValueError(f"{count} chunk rows, manifest says {n}")
            (docs,) = db.execute("SELECT COUNT(*) FROM documents").fetchone()
            if docs != manifest.counts.get("documents"):
                raise ValueError(f"{docs} documents, manifest says {manifest.counts.get('documents')}")

            stage = VECTORS_FILE
            vectors = FaissVectors.read(path / VECTORS_FILE)
            if vectors.ntotal != n or vectors.dim != manifest.dim:
                raise ValueError(
                    f"{vectors.ntotal} vectors of dim {vectors.dim}, manifest says {n} x {manifest.dim}"
                )
            vectors.prepare_queries(manifest.vector_index, self.hnsw_ef_search)

            stage = KEYWORD_DIR
            keyword = load_keyword_index(manifest.keyword_backend, path / KEYWORD_DIR)
            if len(keyword) != n:
                raise ValueError(f"{len(keyword)} BM25 documents, manifest says {n}")

            stage = GLOSSARY_FILE
            glossary = json.loads((path / GLOSSARY_FILE).read_text(encoding="utf-8"))
            alias_groups = [[str(t) for t in g] for g in glossary.get("alias_groups", [])]
            user_words = [str(w) for w in glossary.get("user_words", [])]
            vector_terms = [str(t) for t in glossary.get("vector_terms", [])]

            stage = TERM_VECTORS_FILE
            term_vectors = np.load(path / TERM_VECTORS_FILE, allow_pickle=False)
            if term_vectors.shape != (len(vector_terms), manifest.dim) or term_vectors.dtype != np.float32:
                raise ValueError(
                    f"{term_vectors.shape} {term_vectors.dtype} term vectors for {len(vector_terms)} terms"
                )

            stage = READER_VECTORS_FILE
            reader_texts: list[str] = []
            reader_vectors = None
            if (path / READER_VECTORS_FILE).exists():  # absent in indexes written before the reader
                reader_texts = [str(t) for t in json.loads((path / READER_TEXTS_FILE).read_text(encoding="utf-8"))]
                reader_vectors = np.load(path / READER_VECTORS_FILE, allow_pickle=False)
                if reader_vectors.shape != (len(reader_texts), manifest.dim) or reader_vectors.dtype != np.float32:
                    raise ValueError(
                        f"{reader_vectors.shape} {reader_vectors.dtype} reader vectors for {len(reader_texts)} sentences"
                    )
        except Exception as exc:  # any parse failure of our own files means a damaged index
            if db is not None:
                db.close()
            raise IndexCorrupted(f"index {path.name}: {stage} failed to load ({exc}), {REINGEST}") from exc
        index = LoadedIndex(
            path, manifest, db, vectors, keyword, alias_groups, user_words, vector_terms, term_vectors
        )
        index.set_reader_vectors(reader_texts, reader_vectors)
        return index

    # -- writing --------------------------------------------------------------------------------------

    def publish(self, build: IndexBuild, *, on_stage: StageHook | None = None) -> Manifest:
        """Write `build` as a new version and switch CURRENT to it atomically; return its manifest.

        The caller should hold `WriteLock(index_dir)`; when this process does not, publish takes it for
        its own duration (IngestBusy if another process has it). A crash at any point leaves the
        previously published version serving; the leftovers are removed by the next publish or by
        `cleanup_debris()`. `on_stage` is called with each name of PUBLISH_STAGES.
        """
        if lock_held_here(self.index_dir):
            return self._publish(build, on_stage)
        with WriteLock(self.index_dir, timeout=0.0):
            return self._publish(build, on_stage)

    def _publish(self, build: IndexBuild, on_stage: StageHook | None) -> Manifest:
        stage = on_stage or (lambda name: None)
        vectors = _validate(build)
        n = len(build.chunks)
        keyword_name = choose_keyword_backend(self.keyword_backend, n)
        vector_kind = choose_vector_index(self.vector_index, n)
        current = self._current_or_none()  # kept if intact, else the newest intact one (a server's fallback)
        previous = self._first_intact(([current] if current else []) + self._others_newest_first())

        self.versions_dir.mkdir(parents=True, exist_ok=True)
        version = _new_version_name()
        while (self.versions_dir / version).exists():
            version = _new_version_name()
        tmp = self.versions_dir / f"{TMP_PREFIX}{version}"
        tmp.mkdir()
        try:
            manifest = self._write_version(tmp, version, build, vectors, keyword_name, vector_kind, stage)
        except BaseException:
            remove_tree(tmp)  # a failed (not killed) build leaves nothing behind
            raise

        final = self.versions_dir / version
        os.rename(tmp, final)
        fsync_dir(self.versions_dir)
        stage(PUBLISH_STAGES[3])

        current_tmp = self.index_dir / f"{CURRENT_FILE}.tmp"
        write_text_durably(current_tmp, version + "\n")
        os.replace(current_tmp, self.index_dir / CURRENT_FILE)
        fsync_dir(self.index_dir)
        stage(PUBLISH_STAGES[4])

        self._gc(keep={version, previous} - {None})
        stage(PUBLISH_STAGES[5])
        return manifest

    def _write_version(
        self,
        tmp: Path,
        version: str,
        build: IndexBuild,
        vectors: NDArray[np.float32],
        keyword_name: str,
        vector_kind: str,
        stage: StageHook,
    ) -> Manifest:
        """Write every file of a version into `tmp`, manifest last, all fsynced."""
        n = len(build.chunks)
        stage(PUBLISH_STAGES[0])

        write_chunks_sqlite(tmp / SQLITE_FILE, build)
        write_faiss(tmp / VECTORS_FILE, vectors, vector_kind, self.hnsw_m)
        keyword = new_keyword_index(keyword_name)
        keyword.build(build.tokens)
        keyword.save(tmp / KEYWORD_DIR)
        terms = build.vector_terms if build.term_vectors is not None else []
        glossary = {"alias_groups": build.alias_groups, "user_words": build.user_words, "vector_terms": terms}
        (tmp / GLOSSARY_FILE).write_text(json.dumps(glossary, ensure_ascii=False), encoding="utf-8")
        term_vectors = build.term_vectors if build.term_vectors is not None else np.zeros((0, vectors.shape[1]))
        np.save(tmp / TERM_VECTORS_FILE, np.ascontiguousarray(term_vectors, dtype=np.float32), allow_pickle=False)
        if build.reader_vectors is not None:
            (tmp / READER_TEXTS_FILE).write_text(json.dumps(build.reader_texts, ensure_ascii=False), encoding="utf-8")
            reader_vectors = np.ascontiguousarray(build.reader_vectors, dtype=np.float32)
            np.save(tmp / READER_VECTORS_FILE, reader_vectors, allow_pickle=False)
        stage(PUBLISH_STAGES[1])

        checksums: dict[str, str] = {}
        sizes: dict[str, int] = {}
        for file in version_files(tmp):
            rel = file.relative_to(tmp).as_posix()
            fsync_file(file)
            checksums[rel] = file_sha256(file)
            sizes[rel] = file.stat().st_size
        manifest = Manifest(
            version=version,
            created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            embed_model_id=build.embed_model_id,
            dim=int(vectors.shape[1]),
            settings_fingerprint=dict(build.settings_fingerprint),
            files={d.doc_id: d.sha256 for d in build.documents},
            counts={"documents": len(build.documents), "chunks": n},
            checksums=checksums,
            sizes=sizes,
            keyword_backend=keyword_name,
            vector_index=vector_kind,
            ingest_summary=dict(build.ingest_summary),
            skipped=[{"path": s.path, "reason": s.reason} for s in build.skipped],
        )
        write_text_durably(tmp / MANIFEST_FILE, manifest.to_json())
        for directory in sorted({p.parent for p in tmp.rglob("*")} | {tmp}):
            fsync_dir(directory)
        stage(PUBLISH_STAGES[2])
        return manifest

    def _current_or_none(self) -> str | None:
        try:
            return self.current_version()
        except IndexCorrupted:
            return None

    def _gc(self, keep: set[str | None]) -> list[str]:
        """Remove every version dir and `.tmp-*` dir except `keep` (caller holds the write lock)."""
        removed: list[str] = []
        if not self.versions_dir.is_dir():
            return removed
        for entry in sorted(self.versions_dir.iterdir()):
            if entry.name in keep or not entry.is_dir():
                continue
            target = entry
            if not entry.name.startswith(TMP_PREFIX):
                # rename first so a half-deleted version never looks like a complete one
                target = self.versions_dir / f"{TMP_PREFIX}gc-{entry.name}"
                try:
                    os.rename(entry, target)
                except OSError as exc:
                    log.warning("could not retire %s: %s", entry, exc)
                    continue
            if remove_tree(target):
                removed.append(entry.name)
        return removed

    def cleanup_debris(self) -> list[str]:
        """Remove `.tmp-*` leftovers of builds whose writer is gone; returns the removed names.

        Does nothing while another process holds the write lock (its build may be in progress).
        """
        if not self.versions_dir.is_dir():
            return []
        return unless_busy(self.index_dir, self._remove_tmp)

    def _remove_tmp(self) -> list[str]:
        removed = []
        for entry in sorted(self.versions_dir.iterdir()):
            if entry.name.startswith(TMP_PREFIX) and entry.is_dir() and remove_tree(entry):
                removed.append(entry.name)
        stale = self.index_dir / f"{CURRENT_FILE}.tmp"
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
        return removed


def _safe_relative(rel: str) -> bool:
    parts = rel.split("/")
    return bool(rel) and not rel.startswith("/") and ".." not in parts and "" not in parts


def _validate(build: IndexBuild) -> NDArray[np.float32]:
    """Check the build's invariants; return the vectors as a C-contiguous float32 matrix."""
    n = len(build.chunks)
    vectors = np.ascontiguousarray(build.vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != n or vectors.shape[1] < 1:
        raise ValueError(f"vectors must be (n_chunks={n}, dim), got {vectors.shape}")
    if len(build.tokens) != n:
        raise ValueError(f"{len(build.tokens)} token lists for {n} chunks")
    if n:
        norms = np.linalg.norm(vectors, axis=1)
        if not np.all(np.isfinite(norms)) or np.abs(norms - 1.0).max() > 1e-2:
            raise ValueError("vectors must be finite and L2-normalised")
    doc_ids = {d.doc_id for d in build.documents}
    if len(doc_ids) != len(build.documents):
        raise ValueError("duplicate doc_id in documents")
    unknown = {c.doc_id for c in build.chunks} - doc_ids
    if unknown:
        raise ValueError(f"chunks refer to unknown documents: {sorted(unknown)[:5]}")
    if build.term_vectors is not None and build.term_vectors.shape != (len(build.vector_terms), vectors.shape[1]):
        raise ValueError(
            f"term vectors must be (n_terms={len(build.vector_terms)}, {vectors.shape[1]}), "
            f"got {build.term_vectors.shape}"
        )
    return vectors


def _new_version_name() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)


def _valid_version_name(name: str) -> bool:
    return bool(name) and not name.startswith(".") and "/" not in name and "\\" not in name and name != ".."


__all__ = ["IndexStore", "PUBLISH_STAGES", "StageHook"]
