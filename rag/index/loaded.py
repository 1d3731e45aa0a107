"""One published version opened read-only (`LoadedIndex`), and the SQLite chunk file it reads.

Chunks and documents stay in SQLite (with a small LRU of chunks) and vectors in a memory-mapped FAISS file,
so a loaded index of a million chunks holds no per-chunk Python objects. `write_chunks_sqlite` writes the
tables at publish, next to the queries that read them.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import IndexCorrupted, IndexNotReady
from rag.index.keyword import KeywordIndex
from rag.index.manifest import REINGEST, IndexBuild, Manifest
from rag.index.vectors import VectorIndex
from rag.types import Chunk, Document, SkippedFile

_CHUNK_COLS = 'row, chunk_id, doc_id, heading_path, "start", "end", ordinal, text, index_text'
_PAGE_COLS = ", page, page_breaks"  # absent in indexes written before PDF support
# Document metadata a converter sets (rag.types.Document), stored as one JSON column "meta".
_META_FIELDS = ("converter", "tags", "aliases", "links", "backlinks", "page_starts")


def _row_to_chunk(r: tuple) -> Chunk:
    pages = {"page": r[9], "page_breaks": tuple(json.loads(r[10]))} if len(r) > 9 and r[9] is not None else {}
    return Chunk(
        chunk_id=r[1],
        doc_id=r[2],
        heading_path=tuple(json.loads(r[3])),
        start=int(r[4]),
        end=int(r[5]),
        text=r[7],
        index_text=r[8],
        ordinal=int(r[6]),
        **pages,
    )


def _meta_json(doc: Document) -> str | None:
    meta = {name: getattr(doc, name) for name in _META_FIELDS if getattr(doc, name)}
    return json.dumps(meta, ensure_ascii=False) if meta else None


def _meta(raw: str | None) -> dict[str, Any]:
    """The stored metadata of a document, as `Document` fields (tuples)."""
    meta = json.loads(raw) if raw else {}
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in meta.items() if k in _META_FIELDS}


class LoadedIndex:
    """One published version opened read-only; safe for concurrent queries from many threads."""

    _CACHE_SIZE = 4096

    def __init__(
        self,
        path: Path,
        manifest: Manifest,
        db: sqlite3.Connection,
        vectors: VectorIndex,
        keyword: KeywordIndex,
        alias_groups: list[list[str]],
        user_words: list[str],
        vector_terms: list[str] | None = None,
        term_vectors: np.ndarray | None = None,
    ) -> None:
        self.path = path
        self.manifest = manifest
        self.alias_groups = alias_groups
        self.user_words = user_words
        self.vector_terms = vector_terms or []
        self.term_vectors = (
            term_vectors if term_vectors is not None else np.zeros((0, manifest.dim), dtype=np.float32)
        )
        self.skipped = [SkippedFile(path=s["path"], reason=s["reason"]) for s in manifest.skipped]
        self._db: sqlite3.Connection | None = db
        self._db_lock = threading.Lock()
        self._vectors: VectorIndex | None = vectors
        self._keyword = keyword
        self._n = int(manifest.counts.get("chunks", 0))
        self._cache: OrderedDict[int, Chunk] = OrderedDict()
        chunk_columns = {r[1] for r in db.execute("PRAGMA table_info(chunks)")}
        self._chunk_cols = _CHUNK_COLS + (_PAGE_COLS if "page" in chunk_columns else "")
        self._meta_col = ", meta" if any(r[1] == "meta" for r in db.execute("PRAGMA table_info(documents)")) else ""
        self._reader_rows: dict[str, int] = {}
        self._reader_vectors = np.zeros((0, manifest.dim), dtype=np.float32)

    def set_reader_vectors(self, texts: list[str], vectors: np.ndarray | None) -> None:
        """Attach the reader's stored sentence vectors (rows of `vectors` <-> `texts`)."""
        if vectors is not None:
            self._reader_rows = {t: i for i, t in enumerate(texts)}
            self._reader_vectors = vectors

    def reader_vectors(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Stored vectors of the reader's sentence texts: (vectors, found mask); missing rows are zero."""
        out = np.zeros((len(texts), self.manifest.dim), dtype=np.float32)
        found = np.zeros(len(texts), dtype=bool)
        for i, text in enumerate(texts):
            row = self._reader_rows.get(text)
            if row is not None:
                out[i] = self._reader_vectors[row]
                found[i] = True
        return out, found

    # -- identity ------------------------------------------------------------------------------------

    @property
    def version(self) -> str:
        """The version directory name."""
        return self.manifest.version

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self.manifest.dim

    def __len__(self) -> int:
        return self._n

    def __enter__(self) -> LoadedIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the SQLite connection and the index objects (idempotent)."""
        with self._db_lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            self._cache.clear()
        self._vectors = None

    # -- SQLite ---------------------------------------------------------------------------------------

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._db_lock:
            if self._db is None:
                raise IndexNotReady("index is closed")
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                raise IndexCorrupted(
                    f"index {self.version}: chunks.sqlite unreadable ({exc}), {REINGEST}"
                ) from exc

    def chunks(self, rows: Sequence[int]) -> list[Chunk]:
        """Chunks for `rows` (row = FAISS id = BM25 doc index), in the order given; raises IndexError."""
        found: dict[int, Chunk] = {}
        missing: list[int] = []
        with self._db_lock:
            for row in rows:
                row = int(row)
                hit = self._cache.get(row)
                if hit is not None:
                    self._cache.move_to_end(row)
                    found[row] = hit
                else:
                    missing.append(row)
        unique_missing = list(dict.fromkeys(missing))
        for start in range(0, len(unique_missing), 500):
            part = unique_missing[start : start + 500]
            marks = ",".join("?" * len(part))
            for r in self._query(f"SELECT {self._chunk_cols} FROM chunks WHERE row IN ({marks})", part):
                found[int(r[0])] = _row_to_chunk(r)
        if unique_missing:
            with self._db_lock:
                for row in unique_missing:
                    if row in found:
                        self._cache[row] = found[row]
                while len(self._cache) > self._CACHE_SIZE:
                    self._cache.popitem(last=False)
        try:
            return [found[int(row)] for row in rows]
        except KeyError as exc:
            raise IndexError(f"no chunk at row {exc.args[0]} (index has {self._n})") from None

    def chunk_by_id(self, chunk_id: str) -> Chunk | None:
        """The chunk with this id, or None."""
        rows = self._query(f"SELECT {self._chunk_cols} FROM chunks WHERE chunk_id = ?", (chunk_id,))
        return _row_to_chunk(rows[0]) if rows else None

    def row_of(self, chunk_id: str) -> int | None:
        """The row (FAISS id / BM25 index) of a chunk id, or None."""
        rows = self._query("SELECT row FROM chunks WHERE chunk_id = ?", (chunk_id,))
        return int(rows[0][0]) if rows else None

    def doc_rows(self, doc_id: str) -> list[int]:
        """Rows of a document's chunks, ordered by ordinal (e.g. to reuse their vectors)."""
        rows = self._query("SELECT row FROM chunks WHERE doc_id = ? ORDER BY ordinal, row", (doc_id,))
        return [int(r[0]) for r in rows]

    def doc_chunks(self, doc_id: str) -> list[Chunk]:
        """A document's chunks ordered by ordinal."""
        sql = f"SELECT {self._chunk_cols} FROM chunks WHERE doc_id = ? ORDER BY ordinal, row"
        return [_row_to_chunk(r) for r in self._query(sql, (doc_id,))]

    def document(self, doc_id: str) -> Document | None:
        """The document with its full original text, or None."""
        rows = self._query(
            f"SELECT doc_id, title, text, sha256, encoding, size_bytes, mtime{self._meta_col} FROM documents "
            "WHERE doc_id = ?",
            (doc_id,),
        )
        if not rows:
            return None
        r = rows[0]
        return Document(
            doc_id=r[0],
            title=r[1],
            text=r[2],
            sha256=r[3],
            encoding=r[4],
            size_bytes=int(r[5]),
            mtime=float(r[6]),
            **_meta(r[7] if len(r) > 7 else None),
        )

    def documents(self) -> list[dict]:
        """Every document's metadata and chunk count (no text), ordered by doc_id."""
        rows = self._query(
            "SELECT d.doc_id, d.title, d.sha256, d.encoding, d.size_bytes, d.mtime, "
            f"(SELECT COUNT(*) FROM chunks c WHERE c.doc_id = d.doc_id){self._meta_col.replace('meta', 'd.meta')} "
            "FROM documents d ORDER BY d.doc_id"
        )
        keys = ("doc_id", "title", "sha256", "encoding", "size_bytes", "mtime", "chunks")
        listing = []
        for r in rows:
            meta = _meta(r[7] if len(r) > 7 else None)
            listing.append(
                dict(zip(keys, r[:7], strict=True))
                | {"format": meta.get("converter", ""), "tags": list(meta.get("tags", ()))}
            )
        return listing

    def all_chunks_iter(self, batch: int = 2000) -> Iterator[Chunk]:
        """Every chunk in row order, fetched in batches (never all in memory at once)."""
        last = -1
        while True:
            rows = self._query(
                f"SELECT {self._chunk_cols} FROM chunks WHERE row > ? ORDER BY row LIMIT ?", (last, batch)
            )
            if not rows:
                return
            for r in rows:
                yield _row_to_chunk(r)
            last = int(rows[-1][0])

    # -- keyword --------------------------------------------------------------------------------------

    @property
    def keyword_backend(self) -> str:
        """Which BM25 backend serves this index."""
        return self._keyword.name

    def keyword_search(self, query: Mapping[str, float], n: int) -> list[tuple[int, float]]:
        """Weighted BM25 (term -> weight, expansions < 1) -> top-n (row, score), score > 0 only."""
        return self._keyword.search(query, n)

    def keyword_max_score(self, query: Mapping[str, float]) -> float:
        """Upper bound of `keyword_search` scores for this query: sum of weight * idf * (k1 + 1)."""
        return self._keyword.max_score(query)

    def idf(self, term: str) -> float:
        """BM25 IDF of a term (0.0 when no chunk has it)."""
        return self._keyword.idf(term)

    def doc_freq(self, term: str) -> int:
        """How many chunks contain the term."""
        return self._keyword.doc_freq(term)

    def has_term(self, term: str) -> bool:
        """True when some chunk contains the term."""
        return self._keyword.doc_freq(term) > 0

    # -- dense ----------------------------------------------------------------------------------------

    def _vector_index(self) -> VectorIndex:
        index = self._vectors
        if index is None:
            raise IndexNotReady("index is closed")
        return index

    def dense_search(self, vector: np.ndarray, n: int) -> list[tuple[int, float]]:
        """Top-n (row, inner product) for a normalised query vector (= cosine similarity)."""
        return self._vector_index().search(vector, n)

    def vectors(self, rows: Sequence[int]) -> np.ndarray:
        """Stored (normalised) vectors of `rows`, shape (len(rows), dim) float32."""
        return self._vector_index().vectors(rows)

    def similarities(self, queries: np.ndarray, rows: Sequence[int]) -> np.ndarray:
        """Exact cosine of each row's vector with the closest of the normalised `queries` ((k, dim) or (dim,)).

        Scores candidates another ranking found (BM25) as the dense model would, without a search.
        """
        return self._vector_index().similarities(queries, rows)


def write_chunks_sqlite(path: Path, build: IndexBuild) -> None:
    """Write the documents and chunks of `build` (chunk i at row i) as the SQLite file `LoadedIndex` reads."""
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA page_size=16384")  # chunk rows are ~1-3 KB: fewer overflow pages, smaller file
        db.execute("PRAGMA cache_size=-65536")
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute(
            "CREATE TABLE documents (doc_id TEXT PRIMARY KEY, title TEXT NOT NULL, sha256 TEXT NOT NULL, "
            "encoding TEXT NOT NULL, size_bytes INTEGER NOT NULL, mtime REAL NOT NULL, text TEXT NOT NULL, meta TEXT)"
        )
        db.execute(
            "CREATE TABLE chunks (row INTEGER PRIMARY KEY, chunk_id TEXT NOT NULL UNIQUE, doc_id TEXT NOT NULL, "
            'heading_path TEXT NOT NULL, "start" INTEGER NOT NULL, "end" INTEGER NOT NULL, '
            "ordinal INTEGER NOT NULL, text TEXT NOT NULL, index_text TEXT NOT NULL, page INTEGER, page_breaks TEXT)"
        )
        db.executemany(
            "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (d.doc_id, d.title, d.sha256, d.encoding, d.size_bytes, d.mtime, d.text, _meta_json(d))
                for d in build.documents
            ),
        )
        try:
            db.executemany(
                "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        i,
                        c.chunk_id,
                        c.doc_id,
                        json.dumps(list(c.heading_path), ensure_ascii=False),
                        c.start,
                        c.end,
                        c.ordinal,
                        c.text,
                        c.index_text,
                        c.page,
                        json.dumps(list(c.page_breaks)) if c.page is not None else None,
                    )
                    for i, c in enumerate(build.chunks)
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"duplicate chunk_id in build: {exc}") from exc
        db.execute("CREATE INDEX chunks_doc ON chunks (doc_id, ordinal)")
        db.commit()
    finally:
        db.close()


__all__ = ["LoadedIndex", "write_chunks_sqlite"]
