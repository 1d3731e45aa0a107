"""The index in Milvus: versioned, atomic publish (`MilvusStore.publish`), checked load, and GC.

The same surface as `IndexStore`, so engine, ingest and benchmark use either through `open_store`. A version
is four collections `{prefix}_{version}_{chunks,terms,vectors,blobs}` (see `milvus_schema`), written in
batches, flushed and loaded before the one write that publishes it: an upsert of the `current` row of
`{prefix}_meta`, which every replica polls. A failed or killed publish leaves that row, so the published
version keeps serving; its collections are debris that the next ingest drops. Older versions stay for a
grace period (replicas may still be answering from them), and the published and previous ones always stay.

Without RAG_MILVUS_URI the data lives in Milvus Lite under `index_dir/milvus.db` (one process at a time);
with it, on a Milvus server, and nothing of the index is on local disk. One writer at a time: `WriteLock`
guards the index directory on one machine; across machines that is the operator's job.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from rag.errors import IndexCorrupted, IndexNotReady, IngestFailed
from rag.index.local import PUBLISH_STAGES, _validate
from rag.index.lock import WriteLock, lock_held_here, unless_busy
from rag.index.manifest import FORMAT_VERSION, REINGEST, IndexBuild, Manifest
from rag.index.milvus_index import MilvusIndex
from rag.index.milvus_schema import (
    BATCH_ROWS,
    CURRENT_KEY,
    DUMMY_VECTOR,
    PARTS,
    VERSION_RE,
    blob_rows,
    collection,
    connect,
    count_rows,
    create_collections,
    create_meta,
    key64,
    lite_path,
    meta_collection,
    new_version_name,
    read_blob,
    sparse_doc_vectors,
    version_time,
    versions_in,
)
from rag.index.vectors import HNSW_EF_CONSTRUCTION, VectorIndexKind, choose_vector_index

if TYPE_CHECKING:
    from rag.config import Settings

log = logging.getLogger(__name__)

KEYWORD_BACKEND = "milvus_sparse"  # the manifest's name for sparse vectors of our own BM25 weights
GC_GRACE_SECONDS = 600.0  # a superseded version is dropped this long after its successor was created
StageHook = Callable[[str], None]


class MilvusStore:
    """Publishes and loads index versions in Milvus (Lite under `index_dir`, or a server at `uri`)."""

    def __init__(
        self,
        index_dir: Path,
        *,
        uri: str | None = None,
        token: str | None = None,
        prefix: str = "rag",
        vector_index: VectorIndexKind | str = "auto",
        hnsw_m: int = 32,
        hnsw_ef_search: int = 128,
        gc_grace_seconds: float = GC_GRACE_SECONDS,
    ) -> None:
        self.index_dir = Path(index_dir)
        self.uri = uri or str(lite_path(self.index_dir))
        self.token = token
        self.prefix = prefix
        self.vector_index = vector_index
        self.hnsw_m = hnsw_m
        self.hnsw_ef_search = hnsw_ef_search
        self.gc_grace_seconds = gc_grace_seconds
        self._meta_seen = False
        choose_vector_index(vector_index, 0)

    @classmethod
    def from_settings(cls, settings: Settings, *, index_dir: Path | None = None) -> MilvusStore:
        """Build from a `rag.config.Settings` (index_dir, milvus_uri, milvus_token, milvus_collection_prefix)."""
        token = settings.milvus_token.get_secret_value() if settings.milvus_token is not None else None
        return cls(
            settings.index_dir if index_dir is None else index_dir,
            uri=settings.milvus_uri,
            token=token,
            prefix=settings.milvus_collection_prefix,
            vector_index=settings.vector_index,
            hnsw_m=settings.hnsw_m,
            hnsw_ef_search=settings.hnsw_ef_search,
        )

    @property
    def client(self) -> Any:
        """The process's client for this store's Milvus."""
        return connect(self.uri, self.token)

    def _names(self, version: str) -> dict[str, str]:
        return {part: collection(self.prefix, version, part) for part in PARTS}

    def _versions(self) -> dict[str, set[str]]:
        return versions_in(list(self.client.list_collections()), self.prefix)

    # -- reading --------------------------------------------------------------------------------------

    def current_version(self) -> str | None:
        """The published version named by the meta row, or None when nothing is published (one get)."""
        from pymilvus.exceptions import MilvusException

        try:
            if not self._meta_seen:  # asked until it exists (then the poll costs one get)
                if not self.client.has_collection(meta_collection(self.prefix)):
                    return None
                self.client.load_collection(meta_collection(self.prefix))  # released after a Lite restart
                self._meta_seen = True
            rows = self.client.get(meta_collection(self.prefix), ids=[CURRENT_KEY], output_fields=["value"])
        except MilvusException as exc:
            raise IndexNotReady(f"Milvus at {self.uri}: {exc.message}") from exc
        if not rows:
            return None
        name = str(rows[0]["value"])
        if not VERSION_RE.fullmatch(name):
            raise IndexCorrupted(f"{meta_collection(self.prefix)} names no valid version ({name!r}), {REINGEST}")
        return name

    def list_versions(self) -> list[str]:
        """Versions with all their collections (published now, earlier, or debris), sorted by name."""
        return sorted(v for v, parts in self._versions().items() if parts == set(PARTS))

    def load(self, *, verify: bool = True) -> MilvusIndex:
        """Open the published version; IndexNotReady when none, IndexCorrupted when it fails its checks."""
        version = self.current_version()
        if version is None:
            raise IndexNotReady(f"no index yet: {REINGEST}")
        return self.load_version(version, verify=verify)

    def load_fallback(self) -> MilvusIndex | None:
        """The newest intact version but the published one, or None: what to serve while that one is damaged."""
        version = self._first_intact(self._others_newest_first())
        return None if version is None else self.load_version(version, verify=False)

    def previous(self, *, verify: bool = True) -> MilvusIndex | None:
        """The currently published index for an incremental ingest, or None when missing or corrupted."""
        try:
            return self.load(verify=verify)
        except IndexNotReady as exc:
            if isinstance(exc, IndexCorrupted):
                log.warning("ignoring the published index: %s", exc.message)
                return None
            if self.current_version() is None:
                return None
            raise

    def _current_or_none(self) -> str | None:
        try:
            return self.current_version()
        except IndexCorrupted:
            return None

    def _others_newest_first(self) -> list[str]:
        current = self._current_or_none()
        return [v for v in reversed(self.list_versions()) if v != current]

    def _first_intact(self, versions: list[str]) -> str | None:
        for version in versions:
            try:
                self.load_version(version, verify=True).close()
                return version
            except IndexCorrupted as exc:
                log.warning("index version %s fails its checks: %s", version, exc.message)
        return None

    def load_version(self, version: str, *, verify: bool = True) -> MilvusIndex:
        """Open one version; checks its collections, manifest and row counts (`verify`: of every collection)."""
        from pymilvus.exceptions import MilvusException

        if not VERSION_RE.fullmatch(version):
            raise IndexCorrupted(f"invalid index version name {version!r}, {REINGEST}")
        names = self._names(version)
        try:
            missing = set(PARTS) - self._versions().get(version, set())
            if missing:
                raise IndexCorrupted(
                    f"index version {version} lacks its Milvus collections {sorted(missing)}, {REINGEST}"
                )
            client = self.client
            for name in names.values():
                client.load_collection(name)
            manifest = self._read_manifest(version)
            stage = "chunks"
            try:
                counts = {p: count_rows(client, names[p]) for p in (PARTS if verify else ("chunks",))}
                for part, rows in counts.items():
                    if rows != manifest.sizes.get(part):
                        raise ValueError(f"{rows} rows in {part}, manifest says {manifest.sizes.get(part)}")
                stage = "glossary"
                glossary = read_blob(client, names["blobs"], "glossary", "")
                stage = "term vectors"
                terms, term_vectors = self._bridge(names["vectors"], manifest.dim)
                if terms != [str(t) for t in glossary.get("vector_terms", [])]:
                    raise ValueError(f"{len(terms)} term vectors for {len(glossary.get('vector_terms', []))} terms")
            except (KeyError, ValueError, TypeError) as exc:
                raise IndexCorrupted(f"index {version}: {stage} failed to load ({exc}), {REINGEST}") from exc
        except MilvusException as exc:
            raise IndexNotReady(f"index {version}: Milvus at {self.uri} failed ({exc.message})") from exc
        search = {"ef": self.hnsw_ef_search} if manifest.vector_index == "hnsw" else {}
        return MilvusIndex(client, self.prefix, manifest, glossary, terms, term_vectors, search_params=search)

    def published_manifest(self) -> Manifest | None:
        """The published version's manifest, read without loading the index; None when nothing is published."""
        version = self.current_version()
        return None if version is None else self._read_manifest(version)

    def _read_manifest(self, version: str) -> Manifest:
        try:
            manifest = Manifest.from_json(read_blob(self.client, collection(self.prefix, version, "blobs"), "manifest", ""))
        except KeyError as exc:
            raise IndexCorrupted(f"index {version}: its manifest is missing, {REINGEST}") from exc
        except (ValueError, TypeError) as exc:
            raise IndexCorrupted(f"index {version}: its manifest is unreadable ({exc}), {REINGEST}") from exc
        if manifest.format_version != FORMAT_VERSION:
            raise IndexCorrupted(
                f"index {version} has format {manifest.format_version}, this build reads {FORMAT_VERSION}: {REINGEST}"
            )
        if manifest.version != version or manifest.keyword_backend != KEYWORD_BACKEND:
            raise IndexCorrupted(f"index {version}: its manifest describes another index, {REINGEST}")
        if set(manifest.sizes) != set(PARTS):
            raise IndexCorrupted(f"index {version}: its manifest does not list its collections, {REINGEST}")
        return manifest

    def _bridge(self, name: str, dim: int) -> tuple[list[str], np.ndarray]:
        rows = self.client.query(name, filter='kind == "bridge"', output_fields=["idx", "text", "vec"])
        rows.sort(key=lambda r: int(r["idx"]))
        if [int(r["idx"]) for r in rows] != list(range(len(rows))):
            raise ValueError("term vector rows are not numbered 0..n-1")
        vectors = np.asarray([r["vec"] for r in rows], dtype=np.float32).reshape(len(rows), dim)
        return [str(r["text"]) for r in rows], vectors

    # -- writing --------------------------------------------------------------------------------------

    def publish(self, build: IndexBuild, *, on_stage: StageHook | None = None) -> Manifest:
        """Write `build` as a new version and switch the meta row to it; return its manifest.

        Takes `WriteLock(index_dir)` when this process does not hold it (IngestBusy if another one does). A
        crash at any point leaves the published version serving. `on_stage` gets each of PUBLISH_STAGES.
        """
        from pymilvus.exceptions import MilvusException

        try:
            if lock_held_here(self.index_dir):
                return self._publish(build, on_stage)
            with WriteLock(self.index_dir, timeout=0.0):
                return self._publish(build, on_stage)
        except MilvusException as exc:
            raise IngestFailed(
                f"could not write the index to Milvus at {self.uri} ({exc.message}); the published index is intact"
            ) from exc

    def _publish(self, build: IndexBuild, on_stage: StageHook | None) -> Manifest:
        stage = on_stage or (lambda name: None)
        vectors = _validate(build)
        n, dim = vectors.shape
        kind = choose_vector_index(self.vector_index, n)
        dense = {"index_type": "FLAT", "metric_type": "IP"}
        if kind == "hnsw":
            efc = max(HNSW_EF_CONSTRUCTION, 2 * self.hnsw_m)
            dense = {"index_type": "HNSW", "metric_type": "IP", "params": {"M": self.hnsw_m, "efConstruction": efc}}
        client = self.client
        create_meta(client, self.prefix)
        current = self._current_or_none()
        previous = self._first_intact(([current] if current else []) + self._others_newest_first())
        existing = self._versions()
        version = new_version_name()
        while version in existing:
            version = new_version_name()
        names = self._names(version)
        stage(PUBLISH_STAGES[0])
        try:
            create_collections(client, self.prefix, version, dim, dense)
            sizes = self._write(names, build, vectors)
            for name in names.values():
                client.flush(name)
            stage(PUBLISH_STAGES[1])
            manifest = Manifest(
                version=version,
                created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                embed_model_id=build.embed_model_id,
                dim=int(dim),
                settings_fingerprint=dict(build.settings_fingerprint),
                files={d.doc_id: d.sha256 for d in build.documents},
                counts={"documents": len(build.documents), "chunks": n},
                checksums={p: "" for p in PARTS},  # Milvus keeps its data's integrity; row counts are checked
                sizes=dict(sizes),
                keyword_backend=KEYWORD_BACKEND,
                vector_index=kind,
                ingest_summary=dict(build.ingest_summary),
                skipped=[{"path": s.path, "reason": s.reason} for s in build.skipped],
            )
            rows: list[dict] = []
            while True:  # the manifest counts its own pieces among the blobs
                manifest.sizes["blobs"] = sizes["blobs"] + max(len(rows), 1)
                rows = blob_rows("manifest", "", manifest.to_json())
                if manifest.sizes["blobs"] == sizes["blobs"] + len(rows):
                    break
            client.insert(names["blobs"], rows)
            client.flush(names["blobs"])
            stage(PUBLISH_STAGES[2])
            for name in names.values():
                client.load_collection(name)
            stage(PUBLISH_STAGES[3])
        except BaseException:
            self._drop(version)  # a failed (not killed) build leaves nothing behind
            raise
        client.upsert(meta_collection(self.prefix), [{"key": CURRENT_KEY, "value": version, "_v": DUMMY_VECTOR}])
        client.flush(meta_collection(self.prefix))
        stage(PUBLISH_STAGES[4])
        self._gc(keep={version, previous} - {None})
        stage(PUBLISH_STAGES[5])
        return manifest

    def _write(self, names: dict[str, str], build: IndexBuild, vectors: NDArray[np.float32]) -> dict[str, int]:
        """Insert chunks, vocabulary, sentence and term vectors, documents and glossary; rows per collection."""
        client = self.client
        vocab, df, sparse = sparse_doc_vectors(build.tokens)
        chunk_rows = (
            {
                "row": i,
                "chunk_id": c.chunk_id,
                "doc_id": c.doc_id,
                "doc_key": key64(c.doc_id),
                "heading_path": json.dumps(list(c.heading_path), ensure_ascii=False),
                "start": c.start,
                "end": c.end,
                "ordinal": c.ordinal,
                "page": -1 if c.page is None else c.page,
                "page_breaks": json.dumps(list(c.page_breaks)) if c.page is not None else "[]",
                "text": c.text,
                "index_text": c.index_text,
                "dense": vectors[i].tolist(),
                "sparse": sparse[i],
            }
            for i, c in enumerate(build.chunks)
        )
        _insert(client, names["chunks"], chunk_rows)
        terms = [{"h": key64(t), "term": t, "tid": tid, "df": int(df[tid - 1]), "_v": DUMMY_VECTOR} for t, tid in vocab.items()]
        _insert(client, names["terms"], iter(terms))
        vector_rows = _sentence_rows(build)
        _insert(client, names["vectors"], iter(vector_rows))
        chunk_counts: dict[str, int] = {}
        for c in build.chunks:
            chunk_counts[c.doc_id] = chunk_counts.get(c.doc_id, 0) + 1
        blobs: list[dict] = []
        listing = []
        for d in sorted(build.documents, key=lambda d: d.doc_id):
            meta = {f: list(v) if isinstance(v, tuple) else v for f in _DOC_META if (v := getattr(d, f))}
            blobs += blob_rows("doc", d.doc_id, {
                "doc_id": d.doc_id, "title": d.title, "text": d.text, "sha256": d.sha256, "encoding": d.encoding,
                "size_bytes": d.size_bytes, "mtime": d.mtime, "meta": meta,
            })
            listing.append({
                "doc_id": d.doc_id, "title": d.title, "sha256": d.sha256, "encoding": d.encoding,
                "size_bytes": d.size_bytes, "mtime": d.mtime, "chunks": chunk_counts.get(d.doc_id, 0),
                "format": d.converter, "tags": list(d.tags),
            })
        blobs += blob_rows("docs", "", listing)
        terms_list = build.vector_terms if build.term_vectors is not None else []
        glossary = {"alias_groups": build.alias_groups, "user_words": build.user_words, "vector_terms": terms_list}
        blobs += blob_rows("glossary", "", glossary)
        _insert(client, names["blobs"], iter(blobs))
        return {"chunks": len(build.chunks), "terms": len(terms), "vectors": len(vector_rows), "blobs": len(blobs)}

    def _drop(self, version: str) -> bool:
        """Drop a version's collections (best effort); True when none is left."""
        ok = True
        for name in self._names(version).values():
            try:
                self.client.drop_collection(name)
            except Exception as exc:  # noqa: BLE001 - a collection that will not go is logged, not fatal
                log.warning("could not drop %s: %s", name, exc)
                ok = False
        return ok

    def _gc(self, keep: set[str]) -> list[str]:
        """Drop versions not in `keep`: debris newer than the published one at once, superseded ones after
        the grace period (caller holds the write lock)."""
        current = self._current_or_none()
        versions = sorted(self._versions())
        now = time.time()
        removed = []
        for i, version in enumerate(versions):
            if version in keep or version == current:
                continue
            # names order by their second only (the suffix is random): a version of the published one's second
            # may be an older, superseded one, so only a later second marks debris of an unfinished publish
            unpublished = current is None or version_time(version) > version_time(current)
            successor = versions[i + 1] if i + 1 < len(versions) else None
            expired = successor is not None and now - version_time(successor) >= self.gc_grace_seconds
            if (unpublished or expired) and self._drop(version):
                removed.append(version)
        return removed

    def cleanup_debris(self) -> list[str]:
        """Drop the collections of builds that never got published (their writer died or failed).

        Does nothing while another process holds the write lock (its build may be in progress).
        """
        return unless_busy(self.index_dir, self._remove_debris)

    def _remove_debris(self) -> list[str]:
        current = self._current_or_none()
        removed = []
        for version, parts in sorted(self._versions().items()):
            if version == current:
                continue
            if (current is None or version > current or parts != set(PARTS)) and self._drop(version):
                removed.append(version)
        return removed

    def drop_all(self) -> None:
        """Drop every collection of this prefix, the meta collection included (a deleted knowledge base)."""
        for version in self._versions():
            self._drop(version)
        self.client.drop_collection(meta_collection(self.prefix))
        self._meta_seen = False


_DOC_META = ("converter", "tags", "aliases", "links", "backlinks", "page_starts")


def _insert(client: Any, name: str, rows: Any) -> None:
    """Insert an iterable of rows in batches of BATCH_ROWS."""
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= BATCH_ROWS:
            client.insert(name, batch)
            batch = []
    if batch:
        client.insert(name, batch)


def _sentence_rows(build: IndexBuild) -> list[dict]:
    rows: dict[int, dict] = {}
    if build.reader_vectors is not None:
        reader = np.asarray(build.reader_vectors, dtype=np.float32)
        for i, text in enumerate(build.reader_texts):  # a repeated sentence keeps its last vector, as locally
            rows[key64("reader", text)] = {"h": key64("reader", text), "kind": "reader", "idx": i, "text": text,
                                           "vec": reader[i].tolist()}
    if build.term_vectors is not None:
        terms = np.asarray(build.term_vectors, dtype=np.float32)
        for i, term in enumerate(build.vector_terms):
            h = key64("bridge", str(i))
            rows[h] = {"h": h, "kind": "bridge", "idx": i, "text": term, "vec": terms[i].tolist()}
    return list(rows.values())


__all__ = ["GC_GRACE_SECONDS", "KEYWORD_BACKEND", "MilvusStore"]
