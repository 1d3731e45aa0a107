"""The keyword (BM25) half of an index: two engines with one scoring rule behind the `KeywordIndex` Protocol.

`RankBM25Index` (rank_bm25, pickled) serves small indexes and `BM25sIndex` (a bm25s score matrix,
memory-mapped) large ones; both score score(d) = sum_t w_t * idf(t) * tf(k1+1) / (tf + k1(1 - b + b dl/avgdl))
with Lucene's IDF, so they rank alike. `choose_keyword_backend` picks one for a setting and a chunk count.
"""

from __future__ import annotations

import itertools
import json
import math
import pickle
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
from numpy.typing import NDArray
from rank_bm25 import BM25Okapi

K1 = 1.5
B = 0.75
# `auto` keyword backend: rank_bm25 below this many chunks, bm25s from here on. Measured (7-term weighted
# query, ~150 tokens/chunk): rank_bm25 finds a new term's postings by scanning every chunk, 7 ms at 5k chunks,
# 51 ms at 20k, 125 ms at 50k (0.1-0.6 ms once its terms are cached); bm25s 0.2-0.5 ms at any of these sizes.
RANK_BM25_MAX_CHUNKS = 5_000

KeywordBackend = Literal["auto", "rank_bm25", "bm25s"]


def bm25_idf(doc_freq: int, n_docs: int) -> float:
    """Lucene's always-positive IDF, shared by both backends: ln(1 + (N - df + 0.5) / (df + 0.5))."""
    if doc_freq <= 0 or n_docs <= 0:
        return 0.0
    return math.log(1.0 + (n_docs - doc_freq + 0.5) / (doc_freq + 0.5))


def _top_n(rows: NDArray[np.int64], scores: NDArray[np.floating], n: int) -> list[tuple[int, float]]:
    """Top-n (row, score) with score > 0, ties broken by row ascending."""
    keep = scores > 0
    rows, scores = rows[keep], scores[keep]
    if n <= 0 or rows.size == 0:
        return []
    if rows.size > n:
        part = np.argpartition(-scores, n - 1)[:n]
        # include every row tied with the n-th score so the tie-break is deterministic
        cutoff = scores[part].min()
        part = np.flatnonzero(scores >= cutoff)
        rows, scores = rows[part], scores[part]
    order = np.lexsort((rows, -scores))[:n]
    return [(int(rows[i]), float(scores[i])) for i in order]


class KeywordIndex(Protocol):
    """A BM25 index over token lists with weighted queries (term -> weight)."""

    name: ClassVar[str]

    def build(self, tokens: Sequence[Sequence[str]]) -> None: ...
    def save(self, directory: Path) -> None: ...
    def search(self, query: Mapping[str, float], n: int) -> list[tuple[int, float]]: ...
    def max_score(self, query: Mapping[str, float]) -> float: ...
    def idf(self, term: str) -> float: ...
    def doc_freq(self, term: str) -> int: ...
    def __len__(self) -> int: ...


class _KeywordBase:
    """Shared scoring rules: score(d) = sum_t w_t * idf(t) * tf(k1+1) / (tf + k1(1 - b + b dl/avgdl))."""

    name: ClassVar[str] = ""
    k1 = K1
    b = B
    n_docs = 0

    def doc_freq(self, term: str) -> int:
        raise NotImplementedError

    def idf(self, term: str) -> float:
        """IDF of `term` (0.0 when absent)."""
        return bm25_idf(self.doc_freq(term), self.n_docs)

    def has_term(self, term: str) -> bool:
        """True when at least one chunk contains `term`."""
        return self.doc_freq(term) > 0

    def max_score(self, query: Mapping[str, float]) -> float:
        """The best score any chunk could reach: sum of weight * idf * (k1 + 1) over known terms."""
        return float(sum(w * self.idf(t) * (self.k1 + 1) for t, w in query.items() if w > 0))

    def __len__(self) -> int:
        return self.n_docs

    @staticmethod
    def _write_meta(directory: Path, name: str, n_docs: int) -> None:
        meta = {"backend": name, "n_docs": n_docs, "k1": K1, "b": B}
        (directory / "meta.json").write_text(json.dumps(meta), encoding="utf-8")

    @staticmethod
    def _read_meta(directory: Path, name: str) -> dict:
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        if meta.get("backend") != name:
            raise ValueError(f"keyword dir holds {meta.get('backend')!r}, expected {name!r}")
        return meta


class _LuceneIdfBM25Okapi(BM25Okapi):
    """rank_bm25's Okapi scorer with Lucene's IDF (no negative IDF / epsilon floor) and kept doc freqs."""

    def _calc_idf(self, nd: dict[str, int]) -> None:
        self.df = dict(nd)
        self.idf = {word: bm25_idf(freq, self.corpus_size) for word, freq in nd.items()}
        self.average_idf = sum(self.idf.values()) / len(self.idf) if self.idf else 0.0


class RankBM25Index(_KeywordBase):
    """rank_bm25 backend: the fitted BM25Okapi object is pickled (our own, checksummed file).

    Weighted queries are scored directly from its doc_freqs/doc_len; each term's postings are found with
    one pass over the documents and kept in a small LRU, so repeated terms are cheap.
    """

    name: ClassVar[str] = "rank_bm25"
    _FILE = "bm25okapi.pkl"
    _POSTINGS_CACHE = 2048

    def __init__(self) -> None:
        self._bm25: Any = None
        self._norm: NDArray[np.float64] = np.zeros(0)
        self._postings: OrderedDict[str, tuple[NDArray[np.int64], NDArray[np.float64]]] = OrderedDict()
        self._lock = threading.Lock()

    def build(self, tokens: Sequence[Sequence[str]]) -> None:
        """Fit BM25Okapi on the token lists."""
        self.n_docs = len(tokens)
        if self.n_docs and any(tokens):
            self._bm25 = _LuceneIdfBM25Okapi([list(t) for t in tokens], k1=K1, b=B)
        self._prepare()

    def _prepare(self) -> None:
        if self._bm25 is None:
            self._norm = np.zeros(self.n_docs)
            return
        doc_len = np.asarray(self._bm25.doc_len, dtype=np.float64)
        self._norm = self.k1 * (1 - self.b + self.b * doc_len / self._bm25.avgdl)

    def save(self, directory: Path) -> None:
        """Write meta.json and the pickled model."""
        directory.mkdir(parents=True, exist_ok=True)
        self._write_meta(directory, self.name, self.n_docs)
        if self._bm25 is not None:
            with (directory / self._FILE).open("wb") as f:
                pickle.dump(self._bm25, f, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def load(cls, directory: Path) -> RankBM25Index:
        """Read what `save` wrote."""
        meta = cls._read_meta(directory, cls.name)
        index = cls()
        index.n_docs = int(meta["n_docs"])
        path = directory / cls._FILE
        if path.exists():
            with path.open("rb") as f:
                index._bm25 = pickle.load(f)  # noqa: S301 - our own file, checksum-verified at load
            if index._bm25.corpus_size != index.n_docs:
                raise ValueError("rank_bm25 corpus size differs from meta.json")
        index._prepare()
        return index

    def doc_freq(self, term: str) -> int:
        """Number of chunks containing `term`."""
        return 0 if self._bm25 is None else int(self._bm25.df.get(term, 0))

    def _term_postings(self, term: str) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        with self._lock:
            hit = self._postings.get(term)
            if hit is not None:
                self._postings.move_to_end(term)
                return hit
        tf = np.fromiter((d.get(term, 0) for d in self._bm25.doc_freqs), dtype=np.float64, count=self.n_docs)
        rows = np.flatnonzero(tf)
        entry = (rows, tf[rows])
        with self._lock:
            self._postings[term] = entry
            while len(self._postings) > self._POSTINGS_CACHE:
                self._postings.popitem(last=False)
        return entry

    def search(self, query: Mapping[str, float], n: int) -> list[tuple[int, float]]:
        """Top-n (row, score) for a weighted query; only rows with score > 0."""
        if self._bm25 is None or n <= 0:
            return []
        scores = np.zeros(self.n_docs)
        for term, weight in query.items():
            if weight <= 0 or term not in self._bm25.df:
                continue
            rows, tf = self._term_postings(term)
            idf = self._bm25.idf[term]
            scores[rows] += weight * idf * tf * (self.k1 + 1) / (tf + self._norm[rows])
        return _top_n(np.arange(self.n_docs), scores, n)


class BM25sIndex(_KeywordBase):
    """bm25s backend: the per-(term, doc) BM25 score matrix in bm25s's CSC format, one column per term.

    The matrix holds exactly what bm25s computes with method="atire" (tf component with k1+1) and
    idf_method="lucene", i.e. the formula of `RankBM25Index`; it is built here with vectorised numpy
    (bm25s's own indexer loops in Python: ~25 s per 100k chunks) and saved/loaded through bm25s, with
    the arrays memory-mapped. A weighted query sums weight * column over the query's terms, touching
    only those terms' postings.
    """

    name: ClassVar[str] = "bm25s"

    def __init__(self) -> None:
        self._data: NDArray[np.float32] = np.zeros(0, dtype=np.float32)
        self._indices: NDArray[np.int32] = np.zeros(0, dtype=np.int32)
        self._indptr: NDArray[np.int64] = np.zeros(1, dtype=np.int64)
        self._vocab: dict[str, int] = {}
        self._retriever: Any = None

    def build(self, tokens: Sequence[Sequence[str]]) -> None:
        """Compute the score matrix for the token lists (vocabulary in order of first appearance)."""
        import bm25s

        n = self.n_docs = len(tokens)
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=n)
        total = int(lengths.sum())
        if total == 0:
            return
        flat = list(itertools.chain.from_iterable(tokens))
        vocab = {t: i for i, t in enumerate(dict.fromkeys(flat))}
        terms = np.fromiter(map(vocab.__getitem__, flat), dtype=np.int64, count=total)
        del flat
        docs = np.repeat(np.arange(n, dtype=np.int64), lengths)
        # sorting by (term, doc) yields the CSC order directly; the counts are the term frequencies
        keys, tf = np.unique(terms * n + docs, return_counts=True)
        del terms, docs
        col, row = np.divmod(keys, n)
        del keys
        df = np.bincount(col, minlength=len(vocab))
        indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
        np.cumsum(df, out=indptr[1:])
        idf = np.log1p((n - df + 0.5) / (df + 0.5))
        norm = self.k1 * (1 - self.b + self.b * lengths / (total / n))
        tf_f = tf.astype(np.float64)
        data = (idf[col] * tf_f * (self.k1 + 1) / (tf_f + norm[row])).astype(np.float32)

        retriever = bm25s.BM25(k1=self.k1, b=self.b, method="atire", idf_method="lucene", backend="numpy")
        retriever.scores = {"data": data, "indices": row.astype(np.int32), "indptr": indptr, "num_docs": n}
        retriever.vocab_dict = vocab
        retriever.unique_token_ids_set = set(vocab.values())
        retriever.nonoccurrence_array = None
        self._retriever = retriever
        self._attach(retriever)

    def _attach(self, retriever: Any) -> None:
        self._data = retriever.scores["data"]
        self._indices = retriever.scores["indices"]
        self._indptr = retriever.scores["indptr"]
        self._vocab = {t: int(i) for t, i in retriever.vocab_dict.items() if t != ""}

    def save(self, directory: Path) -> None:
        """Write meta.json and bm25s's own files (npy arrays, vocab/params JSON)."""
        directory.mkdir(parents=True, exist_ok=True)
        self._write_meta(directory, self.name, self.n_docs)
        if self._retriever is not None:
            self._retriever.save(str(directory), show_progress=False)

    @classmethod
    def load(cls, directory: Path) -> BM25sIndex:
        """Read what `save` wrote, memory-mapping the score arrays."""
        import bm25s

        meta = cls._read_meta(directory, cls.name)
        index = cls()
        index.n_docs = int(meta["n_docs"])
        if (directory / "params.index.json").exists():
            retriever = bm25s.BM25.load(str(directory), mmap=True, show_progress=False)
            if int(retriever.scores["num_docs"]) != index.n_docs:
                raise ValueError("bm25s document count differs from meta.json")
            index._attach(retriever)
            if max(index._vocab.values(), default=-1) + 1 >= len(index._indptr):
                raise ValueError("bm25s vocabulary is larger than its score matrix")
            if int(index._indptr[-1]) != len(index._data) or len(index._data) != len(index._indices):
                raise ValueError("bm25s arrays are inconsistent")
        return index

    def doc_freq(self, term: str) -> int:
        """Number of chunks containing `term`."""
        tid = self._vocab.get(term)
        if tid is None:
            return 0
        return int(self._indptr[tid + 1] - self._indptr[tid])

    def search(self, query: Mapping[str, float], n: int) -> list[tuple[int, float]]:
        """Top-n (row, score) for a weighted query; only rows with score > 0."""
        if n <= 0 or not self._vocab:
            return []
        parts_rows: list[NDArray[np.int32]] = []
        parts_vals: list[NDArray[np.float64]] = []
        for term, weight in query.items():
            tid = self._vocab.get(term)
            if tid is None or weight <= 0:
                continue
            lo, hi = int(self._indptr[tid]), int(self._indptr[tid + 1])
            if hi > lo:
                parts_rows.append(np.asarray(self._indices[lo:hi]))
                parts_vals.append(weight * np.asarray(self._data[lo:hi], dtype=np.float64))
        if not parts_rows:
            return []
        if len(parts_rows) == 1:
            return _top_n(parts_rows[0].astype(np.int64), parts_vals[0], n)
        rows = np.concatenate(parts_rows)
        vals = np.concatenate(parts_vals)
        if rows.size * 8 < self.n_docs:  # sparse: aggregate only the touched rows
            uniq, inverse = np.unique(rows, return_inverse=True)
            return _top_n(uniq.astype(np.int64), np.bincount(inverse, weights=vals), n)
        scores = np.bincount(rows, weights=vals, minlength=self.n_docs)
        return _top_n(np.arange(self.n_docs), scores, n)


_KEYWORD_CLASSES: dict[str, type[RankBM25Index] | type[BM25sIndex]] = {
    RankBM25Index.name: RankBM25Index,
    BM25sIndex.name: BM25sIndex,
}


KEYWORD_BACKENDS: tuple[str, ...] = tuple(_KEYWORD_CLASSES)  # the concrete names a manifest may record


def choose_keyword_backend(backend: str, n_chunks: int) -> str:
    """The concrete BM25 backend for a setting and a chunk count."""
    if backend == "auto":
        return RankBM25Index.name if n_chunks < RANK_BM25_MAX_CHUNKS else BM25sIndex.name
    if backend not in _KEYWORD_CLASSES:
        raise ValueError(f"unknown keyword backend {backend!r}")
    return backend


def new_keyword_index(name: str) -> KeywordIndex:
    """An empty index of the named concrete backend, to `build` and `save`."""
    return _KEYWORD_CLASSES[name]()


def load_keyword_index(name: str, directory: Path) -> KeywordIndex:
    """Read what the named backend's `save` wrote into `directory`."""
    return _KEYWORD_CLASSES[name].load(directory)


__all__ = [
    "B",
    "BM25sIndex",
    "K1",
    "KEYWORD_BACKENDS",
    "KeywordBackend",
    "KeywordIndex",
    "RANK_BM25_MAX_CHUNKS",
    "RankBM25Index",
    "bm25_idf",
    "choose_keyword_backend",
    "load_keyword_index",
    "new_keyword_index",
]
