"""The index on disk: written by ingest (`IndexStore.publish`), read by retrieval (`IndexStore.load`).

Layout under `index_dir`:

    CURRENT                  names the published version; replaced atomically (tmp + fsync + os.replace)
    versions/<version>/      one complete index: manifest.json, chunks.sqlite, vectors.faiss, keyword/,
                             glossary.json
    versions/.tmp-<name>/    a version being built (or being deleted); debris when its writer died
    .lock                    flock held by the writer (see `WriteLock`)

Every file of a version is listed in its manifest with size and sha256, so truncation, flipped bytes and
missing files surface as `IndexCorrupted` instead of wrong answers. Row `i` is the same chunk everywhere:
SQLite `chunks.row`, FAISS id and BM25 document index. Chunks stay in SQLite and vectors in a memory-mapped
FAISS file, so a loaded index of a million chunks holds no per-chunk Python objects.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import itertools
import json
import logging
import math
import os
import pickle
import secrets
import shutil
import sqlite3
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import faiss
import numpy as np
from numpy.typing import NDArray
from rank_bm25 import BM25Okapi

from rag.errors import IndexCorrupted, IndexNotReady, IngestBusy
from rag.types import Chunk, Document, SkippedFile

if TYPE_CHECKING:
    from rag.config import Settings

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: glossary term vectors (terms.npy)
K1 = 1.5
B = 0.75
# `auto` keyword backend: rank_bm25 below this many chunks, bm25s from here on. Measured (7-term weighted
# query, ~150 tokens/chunk): rank_bm25 finds a new term's postings by scanning every chunk, 7 ms at 5k chunks,
# 51 ms at 20k, 125 ms at 50k (0.1-0.6 ms once its terms are cached); bm25s 0.2-0.5 ms at any of these sizes.
RANK_BM25_MAX_CHUNKS = 5_000
# `auto` vector index: exact flat search up to this many vectors, HNSW above.
FLAT_MAX_VECTORS = 100_000
HNSW_EF_CONSTRUCTION = 80

CURRENT_FILE = "CURRENT"
LOCK_FILE = ".lock"
VERSIONS_DIR = "versions"
TMP_PREFIX = ".tmp-"
MANIFEST_FILE = "manifest.json"
SQLITE_FILE = "chunks.sqlite"
TERM_VECTORS_FILE = "terms.npy"  # glossary names embedded as queries, rows = glossary.json "vector_terms"
VECTORS_FILE = "vectors.faiss"
KEYWORD_DIR = "keyword"
GLOSSARY_FILE = "glossary.json"

# Stages reported to `publish(on_stage=...)`, in order.
PUBLISH_STAGES = (
    "publish:tmp_created",
    "publish:files_written",
    "publish:manifest_written",
    "publish:renamed",
    "publish:switched",
    "publish:done",
)

KeywordBackend = Literal["auto", "rank_bm25", "bm25s"]
VectorIndexKind = Literal["auto", "flat", "hnsw"]
StageHook = Callable[[str], None]

_REINGEST = "run `rag ingest --full`"


# --------------------------------------------------------------------------------------------------
# Build input and manifest


@dataclass
class IndexBuild:
    """Everything a publish needs; row i of `chunks` <-> `vectors[i]` <-> `tokens[i]`."""

    documents: list[Document]
    chunks: list[Chunk]
    vectors: np.ndarray  # (n, dim) float32, L2-normalised
    tokens: list[list[str]]  # BM25 tokens of each chunk's index_text
    embed_model_id: str
    settings_fingerprint: dict
    alias_groups: list[list[str]] = field(default_factory=list)
    user_words: list[str] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    ingest_summary: dict = field(default_factory=dict)
    vector_terms: list[str] = field(default_factory=list)  # glossary names with a vector in term_vectors
    term_vectors: np.ndarray | None = None  # (len(vector_terms), dim) float32, L2-normalised


@dataclass
class Manifest:
    """What a version holds and how to check it: sizes and sha256 of every other file in the version."""

    version: str
    created_at: str
    embed_model_id: str
    dim: int
    settings_fingerprint: dict
    files: dict[str, str]  # doc_id -> sha256 of the note's raw bytes
    counts: dict[str, int]  # documents, chunks
    checksums: dict[str, str]  # relative POSIX path -> sha256
    sizes: dict[str, int]  # relative POSIX path -> bytes
    keyword_backend: str
    vector_index: str
    ingest_summary: dict = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        """Serialise as pretty, deterministic JSON."""
        return json.dumps(asdict(self), ensure_ascii=False, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse and type-check; raises ValueError on anything malformed."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"manifest is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError("manifest is not a JSON object")
        try:
            manifest = cls(
                version=str(data["version"]),
                created_at=str(data["created_at"]),
                embed_model_id=str(data["embed_model_id"]),
                dim=int(data["dim"]),
                settings_fingerprint=dict(data["settings_fingerprint"]),
                files={str(k): str(v) for k, v in dict(data["files"]).items()},
                counts={str(k): int(v) for k, v in dict(data["counts"]).items()},
                checksums={str(k): str(v) for k, v in dict(data["checksums"]).items()},
                sizes={str(k): int(v) for k, v in dict(data["sizes"]).items()},
                keyword_backend=str(data["keyword_backend"]),
                vector_index=str(data["vector_index"]),
                ingest_summary=dict(data.get("ingest_summary", {})),
                skipped=[
                    {"path": str(s["path"]), "reason": str(s["reason"])} for s in data.get("skipped", [])
                ],
                format_version=int(data.get("format_version", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"manifest field missing or malformed: {exc}") from exc
        if manifest.keyword_backend not in _KEYWORD_CLASSES:
            raise ValueError(f"unknown keyword backend {manifest.keyword_backend!r}")
        if manifest.vector_index not in ("flat", "hnsw"):
            raise ValueError(f"unknown vector index {manifest.vector_index!r}")
        if set(manifest.checksums) != set(manifest.sizes):
            raise ValueError("manifest checksums and sizes list different files")
        return manifest


# --------------------------------------------------------------------------------------------------
# File helpers


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _version_files(root: Path) -> list[Path]:
    """Every regular file under `root`, sorted, excluding the manifest itself."""
    files = [p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_FILE]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _write_text_durably(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _new_version_name() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)


def _valid_version_name(name: str) -> bool:
    return bool(name) and not name.startswith(".") and "/" not in name and "\\" not in name and name != ".."


def _rmtree(path: Path) -> bool:
    try:
        shutil.rmtree(path)
        return True
    except FileNotFoundError:
        return True
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)
        return False


# --------------------------------------------------------------------------------------------------
# Write lock


_held_locks: set[str] = set()  # index dirs whose WriteLock this process holds (so publish can check)
_held_guard = threading.Lock()


class WriteLock:
    """Exclusive writer lock on `index_dir/.lock` (fcntl.flock); only one ingest publishes at a time.

    Waits up to `timeout` seconds for a busy lock, then raises IngestBusy. The holder's pid is written into
    the lock file for diagnostics; the lock itself dies with the process (no stale-lock cleanup needed).
    """

    def __init__(self, index_dir: Path, *, timeout: float = 0.0, poll: float = 0.05) -> None:
        self.index_dir = Path(index_dir)
        self.path = self.index_dir / LOCK_FILE
        self.timeout = timeout
        self.poll = poll
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise IngestBusy after `timeout` seconds."""
        if self._fd is not None:
            raise RuntimeError("WriteLock is not reentrant")
        self.index_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + max(self.timeout, 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise IngestBusy(f"another ingest is running (lock {self.path}{holder})") from None
                time.sleep(self.poll)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        with _held_guard:
            _held_locks.add(_lock_key(self.index_dir))

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self._fd is None:
            return
        with _held_guard:
            _held_locks.discard(_lock_key(self.index_dir))
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> WriteLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock_key(index_dir: Path) -> str:
    return str(Path(index_dir).resolve())


def _read_holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode().strip() or "0")
        if pid > 0:
            return f", held by pid {pid}"
    return ""


def _lock_held_here(index_dir: Path) -> bool:
    with _held_guard:
        return _lock_key(index_dir) in _held_locks


# --------------------------------------------------------------------------------------------------
# Keyword (BM25) indexes


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


def choose_keyword_backend(backend: str, n_chunks: int) -> str:
    """The concrete BM25 backend for a setting and a chunk count."""
    if backend == "auto":
        return RankBM25Index.name if n_chunks < RANK_BM25_MAX_CHUNKS else BM25sIndex.name
    if backend not in _KEYWORD_CLASSES:
        raise ValueError(f"unknown keyword backend {backend!r}")
    return backend


def choose_vector_index(kind: str, n_vectors: int) -> str:
    """The concrete vector index kind for a setting and a vector count."""
    if kind == "auto":
        return "flat" if n_vectors <= FLAT_MAX_VECTORS else "hnsw"
    if kind not in ("flat", "hnsw"):
        raise ValueError(f"unknown vector index {kind!r}")
    return kind


# --------------------------------------------------------------------------------------------------
# Loaded (read-only) index


_CHUNK_COLS = 'row, chunk_id, doc_id, heading_path, "start", "end", ordinal, text, index_text'


def _row_to_chunk(r: tuple) -> Chunk:
    return Chunk(
        chunk_id=r[1],
        doc_id=r[2],
        heading_path=tuple(json.loads(r[3])),
        start=int(r[4]),
        end=int(r[5]),
        text=r[7],
        index_text=r[8],
        ordinal=int(r[6]),
    )


class LoadedIndex:
    """One published version opened read-only; safe for concurrent queries from many threads."""

    _CACHE_SIZE = 4096

    def __init__(
        self,
        path: Path,
        manifest: Manifest,
        db: sqlite3.Connection,
        vectors: Any,
        keyword: RankBM25Index | BM25sIndex,
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
        self._faiss = vectors
        self._keyword = keyword
        self._n = int(manifest.counts.get("chunks", 0))
        self._cache: OrderedDict[int, Chunk] = OrderedDict()

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
        self._faiss = None

    # -- SQLite ---------------------------------------------------------------------------------------

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._db_lock:
            if self._db is None:
                raise IndexNotReady("index is closed")
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                raise IndexCorrupted(
                    f"index {self.version}: chunks.sqlite unreadable ({exc}), {_REINGEST}"
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
            for r in self._query(f"SELECT {_CHUNK_COLS} FROM chunks WHERE row IN ({marks})", part):
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
        rows = self._query(f"SELECT {_CHUNK_COLS} FROM chunks WHERE chunk_id = ?", (chunk_id,))
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
        sql = f"SELECT {_CHUNK_COLS} FROM chunks WHERE doc_id = ? ORDER BY ordinal, row"
        return [_row_to_chunk(r) for r in self._query(sql, (doc_id,))]

    def document(self, doc_id: str) -> Document | None:
        """The document with its full original text, or None."""
        rows = self._query(
            "SELECT doc_id, title, text, sha256, encoding, size_bytes, mtime FROM documents WHERE doc_id = ?",
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
        )

    def documents(self) -> list[dict]:
        """Every document's metadata and chunk count (no text), ordered by doc_id."""
        rows = self._query(
            "SELECT d.doc_id, d.title, d.sha256, d.encoding, d.size_bytes, d.mtime, "
            "(SELECT COUNT(*) FROM chunks c WHERE c.doc_id = d.doc_id) FROM documents d ORDER BY d.doc_id"
        )
        keys = ("doc_id", "title", "sha256", "encoding", "size_bytes", "mtime", "chunks")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def all_chunks_iter(self, batch: int = 2000) -> Iterator[Chunk]:
        """Every chunk in row order, fetched in batches (never all in memory at once)."""
        last = -1
        while True:
            rows = self._query(
                f"SELECT {_CHUNK_COLS} FROM chunks WHERE row > ? ORDER BY row LIMIT ?", (last, batch)
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

    def _index(self) -> Any:
        index = self._faiss
        if index is None:
            raise IndexNotReady("index is closed")
        return index

    def dense_search(self, vector: np.ndarray, n: int) -> list[tuple[int, float]]:
        """Top-n (row, inner product) for a normalised query vector (= cosine similarity)."""
        index = self._index()
        if n <= 0 or index.ntotal == 0:
            return []
        q = np.ascontiguousarray(np.asarray(vector, dtype=np.float32).reshape(1, -1))
        if q.shape[1] != self.dim:
            raise ValueError(f"query vector has dim {q.shape[1]}, index has {self.dim}")
        faiss.omp_set_num_threads(1)  # per calling thread: request threads would otherwise fan out (flat)
        scores, ids = index.search(q, min(n, index.ntotal))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def vectors(self, rows: Sequence[int]) -> np.ndarray:
        """Stored (normalised) vectors of `rows`, shape (len(rows), dim) float32."""
        index = self._index()
        ids = np.asarray(rows, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if ids.min() < 0 or ids.max() >= index.ntotal:
            raise IndexError(f"row out of range (index has {index.ntotal})")
        return index.reconstruct_batch(ids)


# --------------------------------------------------------------------------------------------------
# The store


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
    def from_settings(cls, settings: Settings) -> IndexStore:
        """Build from a `rag.config.Settings`."""
        return cls(
            settings.index_dir,
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
                f"{self.index_dir / CURRENT_FILE} is unreadable ({exc}), {_REINGEST}"
            ) from exc
        if not _valid_version_name(name):
            raise IndexCorrupted(f"{self.index_dir / CURRENT_FILE} names no valid version, {_REINGEST}")
        return name

    def list_versions(self) -> list[str]:
        """Complete version directories on disk (published now or one back), sorted by name."""
        if not self.versions_dir.is_dir():
            return []
        return sorted(
            p.name for p in self.versions_dir.iterdir() if p.is_dir() and _valid_version_name(p.name)
        )

    def load(self, *, verify: bool = True) -> LoadedIndex:
        """Open the published version; IndexNotReady when none, IndexCorrupted when it fails its checks.

        Never falls back to an older version: the caller decides whether to keep serving what it has.
        """
        version = self.current_version()
        if version is None:
            raise IndexNotReady("no index yet: run `rag ingest`")
        return self.load_version(version, verify=verify)

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
            raise IndexCorrupted(f"invalid index version name {version!r}, {_REINGEST}")
        path = self.versions_dir / version
        if not path.is_dir():
            raise IndexCorrupted(f"index version {version} is missing from {self.versions_dir}, {_REINGEST}")
        manifest = self._read_manifest(path)
        self._check_files(path, manifest, verify=verify)
        return self._open(path, manifest)

    def _read_manifest(self, path: Path) -> Manifest:
        try:
            text = (path / MANIFEST_FILE).read_text(encoding="utf-8")
            manifest = Manifest.from_json(text)
        except FileNotFoundError as exc:
            raise IndexCorrupted(f"index {path.name}: manifest.json is missing, {_REINGEST}") from exc
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise IndexCorrupted(
                f"index {path.name}: manifest.json is unreadable ({exc}), {_REINGEST}"
            ) from exc
        if manifest.format_version != FORMAT_VERSION:
            raise IndexCorrupted(
                f"index {path.name} has format {manifest.format_version}, this build reads {FORMAT_VERSION}: "
                f"{_REINGEST}"
            )
        if manifest.version != path.name:
            raise IndexCorrupted(f"index {path.name}: manifest names version {manifest.version}, {_REINGEST}")
        for required in (SQLITE_FILE, VECTORS_FILE, GLOSSARY_FILE, f"{KEYWORD_DIR}/meta.json"):
            if required not in manifest.checksums:
                raise IndexCorrupted(f"index {path.name}: manifest does not list {required}, {_REINGEST}")
        return manifest

    @staticmethod
    def _check_files(path: Path, manifest: Manifest, *, verify: bool) -> None:
        for rel, expected in manifest.checksums.items():
            file = path / rel
            if not _safe_relative(rel) or not file.is_file():
                raise IndexCorrupted(f"index {path.name}: {rel} is missing, {_REINGEST}")
            size = file.stat().st_size
            if size != manifest.sizes[rel]:
                raise IndexCorrupted(
                    f"index {path.name}: size mismatch in {rel} ({size} bytes, expected "
                    f"{manifest.sizes[rel]}; truncated?), {_REINGEST}"
                )
            if verify and _sha256(file) != expected:
                raise IndexCorrupted(f"index {path.name}: checksum mismatch in {rel}, {_REINGEST}")

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
            vectors = _read_faiss(path / VECTORS_FILE)
            if vectors.ntotal != n or vectors.d != manifest.dim:
                raise ValueError(
                    f"{vectors.ntotal} vectors of dim {vectors.d}, manifest says {n} x {manifest.dim}"
                )
            if manifest.vector_index == "hnsw":
                faiss.downcast_index(vectors).hnsw.efSearch = self.hnsw_ef_search
            faiss.omp_set_num_threads(1)  # single queries are faster without OpenMP fan-out on small machines

            stage = KEYWORD_DIR
            keyword = _KEYWORD_CLASSES[manifest.keyword_backend].load(path / KEYWORD_DIR)
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
        except Exception as exc:  # any parse failure of our own files means a damaged index
            if db is not None:
                db.close()
            raise IndexCorrupted(f"index {path.name}: {stage} failed to load ({exc}), {_REINGEST}") from exc
        return LoadedIndex(
            path, manifest, db, vectors, keyword, alias_groups, user_words, vector_terms, term_vectors
        )

    # -- writing --------------------------------------------------------------------------------------

    def publish(self, build: IndexBuild, *, on_stage: StageHook | None = None) -> Manifest:
        """Write `build` as a new version and switch CURRENT to it atomically; return its manifest.

        The caller should hold `WriteLock(index_dir)`; when this process does not, publish takes it for
        its own duration (IngestBusy if another process has it). A crash at any point leaves the
        previously published version serving; the leftovers are removed by the next publish or by
        `cleanup_debris()`. `on_stage` is called with each name of PUBLISH_STAGES.
        """
        if _lock_held_here(self.index_dir):
            return self._publish(build, on_stage)
        with WriteLock(self.index_dir, timeout=0.0):
            return self._publish(build, on_stage)

    def _publish(self, build: IndexBuild, on_stage: StageHook | None) -> Manifest:
        stage = on_stage or (lambda name: None)
        vectors = _validate(build)
        n = len(build.chunks)
        keyword_name = choose_keyword_backend(self.keyword_backend, n)
        vector_kind = choose_vector_index(self.vector_index, n)
        previous = self._current_or_none()

        self.versions_dir.mkdir(parents=True, exist_ok=True)
        version = _new_version_name()
        while (self.versions_dir / version).exists():
            version = _new_version_name()
        tmp = self.versions_dir / f"{TMP_PREFIX}{version}"
        tmp.mkdir()
        try:
            manifest = self._write_version(tmp, version, build, vectors, keyword_name, vector_kind, stage)
        except BaseException:
            _rmtree(tmp)  # a failed (not killed) build leaves nothing behind
            raise

        final = self.versions_dir / version
        os.rename(tmp, final)
        _fsync_dir(self.versions_dir)
        stage(PUBLISH_STAGES[3])

        current_tmp = self.index_dir / f"{CURRENT_FILE}.tmp"
        _write_text_durably(current_tmp, version + "\n")
        os.replace(current_tmp, self.index_dir / CURRENT_FILE)
        _fsync_dir(self.index_dir)
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

        _write_sqlite(tmp / SQLITE_FILE, build)
        _write_faiss(tmp / VECTORS_FILE, vectors, vector_kind, self.hnsw_m)
        keyword = _KEYWORD_CLASSES[keyword_name]()
        keyword.build(build.tokens)
        keyword.save(tmp / KEYWORD_DIR)
        terms = build.vector_terms if build.term_vectors is not None else []
        glossary = {"alias_groups": build.alias_groups, "user_words": build.user_words, "vector_terms": terms}
        (tmp / GLOSSARY_FILE).write_text(json.dumps(glossary, ensure_ascii=False), encoding="utf-8")
        term_vectors = build.term_vectors if build.term_vectors is not None else np.zeros((0, vectors.shape[1]))
        np.save(tmp / TERM_VECTORS_FILE, np.ascontiguousarray(term_vectors, dtype=np.float32), allow_pickle=False)
        stage(PUBLISH_STAGES[1])

        checksums: dict[str, str] = {}
        sizes: dict[str, int] = {}
        for file in _version_files(tmp):
            rel = file.relative_to(tmp).as_posix()
            _fsync_file(file)
            checksums[rel] = _sha256(file)
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
        _write_text_durably(tmp / MANIFEST_FILE, manifest.to_json())
        for directory in sorted({p.parent for p in tmp.rglob("*")} | {tmp}):
            _fsync_dir(directory)
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
            if _rmtree(target):
                removed.append(entry.name)
        return removed

    def cleanup_debris(self) -> list[str]:
        """Remove `.tmp-*` leftovers of builds whose writer is gone; returns the removed names.

        Does nothing while another process holds the write lock (its build may be in progress).
        """
        if not self.versions_dir.is_dir():
            return []
        if _lock_held_here(self.index_dir):
            return self._remove_tmp()
        try:
            with WriteLock(self.index_dir, timeout=0.0):
                return self._remove_tmp()
        except IngestBusy:
            return []

    def _remove_tmp(self) -> list[str]:
        removed = []
        for entry in sorted(self.versions_dir.iterdir()):
            if entry.name.startswith(TMP_PREFIX) and entry.is_dir() and _rmtree(entry):
                removed.append(entry.name)
        stale = self.index_dir / f"{CURRENT_FILE}.tmp"
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
        return removed


# --------------------------------------------------------------------------------------------------
# Writers


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


def _write_sqlite(path: Path, build: IndexBuild) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA page_size=16384")  # chunk rows are ~1-3 KB: fewer overflow pages, smaller file
        db.execute("PRAGMA cache_size=-65536")
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute(
            "CREATE TABLE documents (doc_id TEXT PRIMARY KEY, title TEXT NOT NULL, sha256 TEXT NOT NULL, "
            "encoding TEXT NOT NULL, size_bytes INTEGER NOT NULL, mtime REAL NOT NULL, text TEXT NOT NULL)"
        )
        db.execute(
            "CREATE TABLE chunks (row INTEGER PRIMARY KEY, chunk_id TEXT NOT NULL UNIQUE, doc_id TEXT NOT NULL, "
            'heading_path TEXT NOT NULL, "start" INTEGER NOT NULL, "end" INTEGER NOT NULL, '
            "ordinal INTEGER NOT NULL, text TEXT NOT NULL, index_text TEXT NOT NULL)"
        )
        db.executemany(
            "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                (d.doc_id, d.title, d.sha256, d.encoding, d.size_bytes, d.mtime, d.text)
                for d in build.documents
            ),
        )
        try:
            db.executemany(
                "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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


def _write_faiss(path: Path, vectors: NDArray[np.float32], kind: str, hnsw_m: int) -> None:
    dim = vectors.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
    else:
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = max(HNSW_EF_CONSTRUCTION, 2 * hnsw_m)
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(os.cpu_count() or 1)  # loading may have pinned OpenMP to one thread
        try:
            for start in range(0, len(vectors), 50_000):
                index.add(vectors[start : start + 50_000])
        finally:
            faiss.omp_set_num_threads(threads)
    faiss.write_index(index, str(path))


def _read_faiss(path: Path) -> Any:
    """Memory-map the index where FAISS supports it (flat and HNSW do), else read it."""
    for flags in (faiss.IO_FLAG_MMAP_IFC, faiss.IO_FLAG_MMAP, 0):
        try:
            return faiss.read_index(str(path), flags)
        except RuntimeError as exc:
            last = exc
    raise last


__all__ = [
    "BM25sIndex",
    "IndexBuild",
    "IndexStore",
    "KeywordIndex",
    "LoadedIndex",
    "Manifest",
    "PUBLISH_STAGES",
    "RankBM25Index",
    "WriteLock",
    "bm25_idf",
    "choose_keyword_backend",
    "choose_vector_index",
]
