"""One published Milvus version opened for queries (`MilvusIndex`, an `IndexBackend`).

Chunks, vectors, the vocabulary and the documents stay in Milvus and are fetched per query (with small LRU
caches); only the glossary (alias groups, user words, bridge term vectors) is held in memory. Keyword search
is an inner product of sparse vectors built from our own tokens: a chunk's vector holds each term's BM25
tf part (K1, B, its length), a query's holds weight x IDF, so the product is exactly the local BM25 score.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rag.errors import IndexNotReady
from rag.index.keyword import K1, bm25_idf
from rag.index.manifest import Manifest
from rag.index.milvus_schema import GET_BATCH, MAX_TOPK, batches, collection, key64, read_blob
from rag.types import Chunk, Document, SkippedFile

CHUNK_FIELDS = [
    "row", "chunk_id", "doc_id", "heading_path", "start", "end", "ordinal", "page", "page_breaks", "text", "index_text",
]
_META_FIELDS = ("converter", "tags", "aliases", "links", "backlinks", "page_starts")


def _chunk(r: Mapping[str, Any]) -> Chunk:
    page = int(r["page"])
    pages = {"page": page, "page_breaks": tuple(json.loads(r["page_breaks"]))} if page >= 0 else {}
    return Chunk(
        chunk_id=r["chunk_id"],
        doc_id=r["doc_id"],
        heading_path=tuple(json.loads(r["heading_path"])),
        start=int(r["start"]),
        end=int(r["end"]),
        text=r["text"],
        index_text=r["index_text"],
        ordinal=int(r["ordinal"]),
        **pages,
    )


class _Lru(OrderedDict):
    """A bounded mapping (callers hold the index's lock)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class MilvusIndex:
    """One Milvus version opened read-only; safe for concurrent queries from many threads."""

    _CACHE_SIZE = 4096

    def __init__(
        self,
        client: Any,
        prefix: str,
        manifest: Manifest,
        glossary: dict,
        vector_terms: list[str],
        term_vectors: np.ndarray,
        *,
        search_params: dict | None = None,
    ) -> None:
        self.manifest = manifest
        self.alias_groups = [[str(t) for t in g] for g in glossary.get("alias_groups", [])]
        self.user_words = [str(w) for w in glossary.get("user_words", [])]
        self.vector_terms = vector_terms
        self.term_vectors = term_vectors
        self.skipped = [SkippedFile(path=s["path"], reason=s["reason"]) for s in manifest.skipped]
        self._client: Any = client
        self._names = {part: collection(prefix, manifest.version, part) for part in ("chunks", "terms", "vectors", "blobs")}
        self._n = int(manifest.counts.get("chunks", 0))
        self._search_params = {"metric_type": "IP", "params": search_params or {}}
        self._lock = threading.Lock()
        self._chunks: _Lru = _Lru(self._CACHE_SIZE)
        self._terms: _Lru = _Lru(self._CACHE_SIZE * 4)
        # the reader's sentence vectors: retrieval ranks passages by their best sentence, then the reader reads
        # the top passages' sentences, so a question asks for most texts twice
        self._sentences: _Lru = _Lru(self._CACHE_SIZE * 4)

    # -- identity ------------------------------------------------------------------------------------

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def keyword_backend(self) -> str:
        return self.manifest.keyword_backend

    def __len__(self) -> int:
        return self._n

    def __enter__(self) -> MilvusIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Forget the caches; the shared client stays open for other indexes (idempotent)."""
        with self._lock:
            self._client = None
            self._chunks.clear()
            self._terms.clear()
            self._sentences.clear()

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One client call; a Milvus failure (server gone, collection dropped) is IndexNotReady, not a crash."""
        from pymilvus.exceptions import MilvusException

        client = self._client
        if client is None:
            raise IndexNotReady("index is closed")
        try:
            return getattr(client, method)(*args, **kwargs) if method != "blob" else read_blob(client, *args)
        except MilvusException as exc:
            raise IndexNotReady(f"index {self.version}: Milvus failed ({exc.message})") from exc

    # -- chunks and documents ------------------------------------------------------------------------

    def chunks(self, rows: Sequence[int]) -> list[Chunk]:
        """Chunks for `rows`, in the order given; raises IndexError for a row the index lacks."""
        found: dict[int, Chunk] = {}
        with self._lock:
            for row in rows:
                hit = self._chunks.get(int(row))
                if hit is not None:
                    found[int(row)] = hit
        missing = [r for r in dict.fromkeys(int(r) for r in rows) if r not in found]
        for part in batches(missing, GET_BATCH):
            for r in self._call("get", self._names["chunks"], ids=part, output_fields=CHUNK_FIELDS):
                found[int(r["row"])] = _chunk(r)
        with self._lock:
            for row in missing:
                if row in found:
                    self._chunks.put(row, found[row])
        try:
            return [found[int(row)] for row in rows]
        except KeyError as exc:
            raise IndexError(f"no chunk at row {exc.args[0]} (index has {self._n})") from None

    def _doc_rows(self, doc_id: str, fields: list[str]) -> list[dict]:
        res = self._call("query", self._names["chunks"], filter=f"doc_key == {key64(doc_id)}", output_fields=fields)
        rows = [r for r in res if r["doc_id"] == doc_id]
        return sorted(rows, key=lambda r: (int(r["ordinal"]), int(r["row"])))

    def doc_rows(self, doc_id: str) -> list[int]:
        """Rows of a document's chunks, ordered by ordinal."""
        return [int(r["row"]) for r in self._doc_rows(doc_id, ["row", "doc_id", "ordinal"])]

    def doc_chunks(self, doc_id: str) -> list[Chunk]:
        """A document's chunks ordered by ordinal."""
        return [_chunk(r) for r in self._doc_rows(doc_id, CHUNK_FIELDS)]

    def document(self, doc_id: str) -> Document | None:
        """The document with its full original text, or None."""
        try:
            data = self._call("blob", self._names["blobs"], "doc", doc_id)
        except KeyError:
            return None
        meta = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.get("meta", {}).items() if k in _META_FIELDS}
        return Document(
            doc_id=data["doc_id"],
            title=data["title"],
            text=data["text"],
            sha256=data["sha256"],
            encoding=data["encoding"],
            size_bytes=int(data["size_bytes"]),
            mtime=float(data["mtime"]),
            **meta,
        )

    def documents(self) -> list[dict]:
        """Every document's metadata and chunk count (no text), ordered by doc_id."""
        return list(self._call("blob", self._names["blobs"], "docs", ""))

    # -- keyword -------------------------------------------------------------------------------------

    def _lookup(self, terms: Sequence[str]) -> dict[str, tuple[int, int]]:
        """term -> (term id, document frequency) for the terms the index knows."""
        out: dict[str, tuple[int, int]] = {}
        missing: list[str] = []
        with self._lock:
            for t in terms:
                hit = self._terms.get(t)
                if hit is None:
                    missing.append(t)
                elif hit[1] > 0:
                    out[t] = hit
        if missing:
            keys = {key64(t): t for t in dict.fromkeys(missing)}
            got: dict[str, tuple[int, int]] = {}
            for part in batches(list(keys), GET_BATCH):
                for r in self._call("get", self._names["terms"], ids=part, output_fields=["h", "term", "tid", "df"]):
                    if keys.get(int(r["h"])) == r["term"]:
                        got[r["term"]] = (int(r["tid"]), int(r["df"]))
            with self._lock:
                for t in keys.values():
                    self._terms.put(t, got.get(t, (0, 0)))
            out.update(got)
        return out

    def doc_freq(self, term: str) -> int:
        """How many chunks contain the term."""
        return self._lookup([term]).get(term, (0, 0))[1]

    def idf(self, term: str) -> float:
        """BM25 IDF of a term (0.0 when no chunk has it)."""
        return bm25_idf(self.doc_freq(term), self._n)

    def has_term(self, term: str) -> bool:
        """True when some chunk contains the term."""
        return self.doc_freq(term) > 0

    def keyword_max_score(self, query: Mapping[str, float]) -> float:
        """Upper bound of `keyword_search` scores: sum of weight * idf * (k1 + 1)."""
        known = self._lookup([t for t, w in query.items() if w > 0])
        return float(sum(query[t] * bm25_idf(df, self._n) * (K1 + 1) for t, (_, df) in known.items()))

    def keyword_search(self, query: Mapping[str, float], n: int) -> list[tuple[int, float]]:
        """Weighted BM25 (term -> weight) -> top-n (row, score), score > 0, ties by row ascending."""
        if n <= 0 or self._n == 0:
            return []
        known = self._lookup([t for t, w in query.items() if w > 0])
        vector = {tid: query[t] * bm25_idf(df, self._n) for t, (tid, df) in known.items()}
        vector = {tid: w for tid, w in vector.items() if w > 0}
        if not vector:
            return []
        limit = min(2 * n + 10, self._n, MAX_TOPK)  # a margin so the row tie-break sees the tied rows
        res = self._call("search",
            self._names["chunks"], data=[vector], anns_field="sparse", limit=limit, output_fields=["row"],
            search_params={"metric_type": "IP"},
        )
        hits = [(int(h["entity"]["row"]), float(h["distance"])) for h in res[0] if float(h["distance"]) > 0]
        hits.sort(key=lambda h: (-h[1], h[0]))
        return hits[:n]

    # -- dense ---------------------------------------------------------------------------------------

    def dense_search(self, vector: np.ndarray, n: int) -> list[tuple[int, float]]:
        """Top-n (row, inner product) for a normalised query vector (= cosine similarity)."""
        if n <= 0 or self._n == 0:
            return []
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.dim:
            raise ValueError(f"query vector has dim {q.shape[0]}, index has {self.dim}")
        res = self._call("search",
            self._names["chunks"], data=[q.tolist()], anns_field="dense", limit=min(n, self._n, MAX_TOPK),
            output_fields=["row"], search_params=self._search_params,
        )
        return [(int(h["entity"]["row"]), float(h["distance"])) for h in res[0]]

    def vectors(self, rows: Sequence[int]) -> np.ndarray:
        """Stored (normalised) vectors of `rows`, shape (len(rows), dim) float32; IndexError for an unknown row."""
        wanted = [int(r) for r in rows]
        found: dict[int, list[float]] = {}
        for part in batches(list(dict.fromkeys(wanted)), GET_BATCH):
            for r in self._call("get", self._names["chunks"], ids=part, output_fields=["row", "dense"]):
                found[int(r["row"])] = r["dense"]
        out = np.zeros((len(wanted), self.dim), dtype=np.float32)
        for i, row in enumerate(wanted):
            if row not in found:
                raise IndexError(f"row {row} out of range (index has {self._n})")
            out[i] = found[row]
        return out

    def similarities(self, queries: np.ndarray, rows: Sequence[int]) -> np.ndarray:
        """Exact cosine of each row's vector with the closest of the normalised `queries` ((k, dim) or (dim,))."""
        return (self.vectors(rows) @ np.atleast_2d(queries).astype(np.float32).T).max(axis=1)

    # -- the reader's stored sentence vectors --------------------------------------------------------

    def reader_vectors(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Stored vectors of the reader's sentence texts: (vectors, found mask); missing rows are zero."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        found = np.zeros(len(texts), dtype=bool)
        got: dict[str, list[float] | None] = {}  # None: the index holds no vector for the text
        with self._lock:
            for text in texts:
                if text in self._sentences:
                    got[text] = self._sentences[text]
        keys = {key64("reader", t): t for t in dict.fromkeys(texts) if t not in got}
        fetched: dict[str, list[float]] = {}
        for part in batches(list(keys), GET_BATCH):
            for r in self._call("get", self._names["vectors"], ids=part, output_fields=["h", "text", "vec"]):
                if keys.get(int(r["h"])) == r["text"]:
                    fetched[r["text"]] = r["vec"]
        with self._lock:
            for text in keys.values():
                got[text] = fetched.get(text)
                self._sentences.put(text, got[text])
        for i, text in enumerate(texts):
            if got.get(text) is not None:
                out[i] = got[text]
                found[i] = True
        return out, found


__all__ = ["CHUNK_FIELDS", "MilvusIndex"]
