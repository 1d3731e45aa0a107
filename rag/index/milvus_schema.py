"""Milvus names, schemas and helpers shared by `MilvusStore` (writing) and `MilvusIndex` (reading), and our
BM25 weights as sparse vectors (`sparse_doc_vectors`).

One version is four collections, `{prefix}_{version}_{part}`:

    chunks   row (pk), chunk metadata and text, `dense` (the chunk vector), `sparse` (our BM25 doc vector)
    terms    the keyword vocabulary: term -> (term id = sparse dimension, document frequency)
    vectors  the reader's sentence vectors and the glossary's term vectors (the cross-lingual bridge)
    blobs    JSON in <= 16k-character pieces: the manifest, the glossary, the document list, each document

and `{prefix}_meta` holds one row, `current`, naming the published version: publish switches it in one upsert.
Keys that come from user text (terms, sentences, doc ids) are hashed to int64, so no filter ever quotes them.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rag.errors import IndexNotReady
from rag.index.keyword import K1, B

PARTS = ("chunks", "terms", "vectors", "blobs")
META = "meta"
CURRENT_KEY = "current"
LITE_FILE = "milvus.db"  # Milvus Lite's data directory under index_dir when no server URI is set
BATCH_ROWS = 5_000  # rows per insert request (Lite and servers cap one request's size)
GET_BATCH = 500  # ids per get request
PIECE_CHARS = 16_000  # a VARCHAR holds 65,535 bytes: 16k characters of up to 4 bytes each
MAX_TOPK = 16_384  # Milvus's largest search limit
NO_TERMS_DIM = 0  # the one dimension of a token-less chunk's sparse vector (Milvus refuses empty ones)
# microseconds in the name keep versions of one second in publish order (older names carry seconds only)
VERSION_RE = re.compile(r"v\d{8}T\d{6}(?:\d{6})?Z_[0-9a-f]{8}")

_clients: dict[tuple[str, str], Any] = {}
_clients_lock = threading.Lock()


def new_version_name() -> str:
    """A sortable, collection-name-safe version: v<UTC time to the microsecond>_<random hex>."""
    now = time.time()
    micros = int(now % 1 * 1_000_000)
    return "v" + time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{micros:06d}Z_" + secrets.token_hex(4)


def version_time(version: str) -> float:
    """The UTC creation time a version name carries (seconds since the epoch)."""
    stamp = version[1:].split("Z", 1)[0]
    seconds = calendar.timegm(time.strptime(stamp[:15], "%Y%m%dT%H%M%S"))
    return seconds + (int(stamp[15:]) / 1_000_000 if len(stamp) > 15 else 0.0)


def collection(prefix: str, version: str, part: str) -> str:
    """The name of one collection of a version."""
    return f"{prefix}_{version}_{part}"


def meta_collection(prefix: str) -> str:
    """The small collection whose `current` row names the published version."""
    return f"{prefix}_{META}"


def versions_in(names: list[str], prefix: str) -> dict[str, set[str]]:
    """Version -> the parts present among collection `names`."""
    pattern = re.compile(rf"{re.escape(prefix)}_({VERSION_RE.pattern})_({'|'.join(PARTS)})")
    found: dict[str, set[str]] = {}
    for name in names:
        m = pattern.fullmatch(name)
        if m:
            found.setdefault(m.group(1), set()).add(m.group(2))
    return found


def key64(*parts: str) -> int:
    """A signed int64 hash of text (primary keys for terms, sentences and documents)."""
    digest = hashlib.blake2b("\x00".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def blob_key(kind: str, name: str, part: int) -> str:
    """The primary key of one piece of a blob."""
    return f"{kind}:{hashlib.sha1(name.encode('utf-8')).hexdigest()}:{part}"


def pieces(text: str) -> list[str]:
    """`text` cut into VARCHAR-sized pieces (at least one)."""
    return [text[i : i + PIECE_CHARS] for i in range(0, len(text), PIECE_CHARS)] or [""]


def batches(items: list, size: int) -> Iterator[list]:
    """`items` in consecutive slices of `size`."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def lite_path(index_dir: Path) -> Path:
    """Milvus Lite's data directory for an index directory."""
    return Path(index_dir) / LITE_FILE


def connect(uri: str, token: str | None) -> Any:
    """One `MilvusClient` per (uri, token) per process (gRPC clients are thread-safe).

    A Lite `.db` path starts Lite's server in this process; Lite lets one process open a data directory,
    so a second one gets IndexNotReady naming the way out (`milvus-lite server` and RAG_MILVUS_URI).
    """
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    key = (uri, token or "")
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            if uri.endswith(".db"):
                Path(uri).parent.mkdir(parents=True, exist_ok=True)
            try:
                client = MilvusClient(uri=uri, token=token or "")
            except MilvusException as exc:
                hint = (
                    f" (Milvus Lite opens {uri} in one process only: run `milvus-lite server --data-dir {uri}` "
                    "and point every process at it with RAG_MILVUS_URI)"
                    if uri.endswith(".db")
                    else ""
                )
                raise IndexNotReady(f"cannot open Milvus at {uri}: {exc.message}{hint}") from exc
            _clients[key] = client
    return client


def disconnect(uri: str, token: str | None = None) -> None:
    """Close this process's client of `uri`; for a Lite path also stop its in-process server, so that
    another process may open the file."""
    with _clients_lock:
        client = _clients.pop((uri, token or ""), None)
    if client is not None:
        client.close()
    if uri.endswith(".db"):
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(uri)


def _dummy(schema: Any) -> None:
    """Milvus wants a vector field in every collection: a 2-d constant one for the non-vector parts."""
    from pymilvus import DataType

    schema.add_field("_v", DataType.FLOAT_VECTOR, dim=2)


DUMMY_VECTOR = [1.0, 0.0]


def create_collections(client: Any, prefix: str, version: str, dim: int, dense_index: dict) -> None:
    """Create the four collections of a version with their indexes."""
    from pymilvus import DataType

    text = {"max_length": 65_535}
    chunks = client.create_schema(auto_id=False, enable_dynamic_field=False)
    chunks.add_field("row", DataType.INT64, is_primary=True)
    chunks.add_field("chunk_id", DataType.VARCHAR, max_length=1_024)
    chunks.add_field("doc_id", DataType.VARCHAR, **text)
    chunks.add_field("doc_key", DataType.INT64)
    chunks.add_field("heading_path", DataType.VARCHAR, **text)
    chunks.add_field("start", DataType.INT64)
    chunks.add_field("end", DataType.INT64)
    chunks.add_field("ordinal", DataType.INT64)
    chunks.add_field("page", DataType.INT64)  # -1: no page
    chunks.add_field("page_breaks", DataType.VARCHAR, **text)
    chunks.add_field("text", DataType.VARCHAR, **text)
    chunks.add_field("index_text", DataType.VARCHAR, **text)
    chunks.add_field("dense", DataType.FLOAT_VECTOR, dim=dim)
    chunks.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    params = client.prepare_index_params()
    params.add_index("dense", **dense_index)
    params.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
    _create(client, collection(prefix, version, "chunks"), chunks, params)

    terms = client.create_schema(auto_id=False, enable_dynamic_field=False)
    terms.add_field("h", DataType.INT64, is_primary=True)
    terms.add_field("term", DataType.VARCHAR, **text)
    terms.add_field("tid", DataType.INT64)
    terms.add_field("df", DataType.INT64)
    _dummy(terms)
    _create(client, collection(prefix, version, "terms"), terms)

    vectors = client.create_schema(auto_id=False, enable_dynamic_field=False)
    vectors.add_field("h", DataType.INT64, is_primary=True)
    vectors.add_field("kind", DataType.VARCHAR, max_length=16)
    vectors.add_field("idx", DataType.INT64)
    vectors.add_field("text", DataType.VARCHAR, **text)
    vectors.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
    params = client.prepare_index_params()
    params.add_index("vec", index_type="FLAT", metric_type="IP")
    _create(client, collection(prefix, version, "vectors"), vectors, params)

    blobs = client.create_schema(auto_id=False, enable_dynamic_field=False)
    blobs.add_field("key", DataType.VARCHAR, is_primary=True, max_length=128)
    blobs.add_field("kind", DataType.VARCHAR, max_length=32)
    blobs.add_field("part", DataType.INT64)
    blobs.add_field("parts", DataType.INT64)
    blobs.add_field("text", DataType.VARCHAR, **text)
    _dummy(blobs)
    _create(client, collection(prefix, version, "blobs"), blobs)


def create_meta(client: Any, prefix: str) -> None:
    """Create `{prefix}_meta` (key -> value) when it does not exist."""
    from pymilvus import DataType

    name = meta_collection(prefix)
    if client.has_collection(name):
        return
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("value", DataType.VARCHAR, max_length=1_024)
    _dummy(schema)
    _create(client, name, schema, consistency_level="Strong")  # every replica sees a switch at once
    client.load_collection(name)


def _create(client: Any, name: str, schema: Any, params: Any = None, **kwargs: Any) -> None:
    """Create a collection and its indexes without pymilvus's 0.5 s polling per index (empty: built at once)."""
    if params is None:
        params = client.prepare_index_params()
        params.add_index("_v", index_type="FLAT", metric_type="IP")
    client.create_collection(name, schema=schema, **kwargs)
    client.create_index(name, params, sync=False)


def blob_rows(kind: str, name: str, value: Any) -> list[dict]:
    """The rows of one JSON blob."""
    parts = pieces(json.dumps(value, ensure_ascii=False))
    return [
        {"key": blob_key(kind, name, i), "kind": kind, "part": i, "parts": len(parts), "text": p, "_v": DUMMY_VECTOR}
        for i, p in enumerate(parts)
    ]


def read_blob(client: Any, coll: str, kind: str, name: str) -> Any:
    """The JSON value of a blob; KeyError when absent or incomplete, ValueError when not JSON."""
    first = client.get(coll, ids=[blob_key(kind, name, 0)], output_fields=["parts", "text"])
    if not first:
        raise KeyError(f"{kind} {name}")
    parts = int(first[0]["parts"])
    texts = {0: first[0]["text"]}
    if parts > 1:
        keys = [blob_key(kind, name, i) for i in range(1, parts)]
        for chunk in batches(keys, GET_BATCH):
            for r in client.get(coll, ids=chunk, output_fields=["part", "text"]):
                texts[int(r["part"])] = r["text"]
    if len(texts) != parts:
        raise KeyError(f"{kind} {name}: {len(texts)} of {parts} pieces")
    return json.loads("".join(texts[i] for i in range(parts)))


def count_rows(client: Any, coll: str) -> int:
    """Exact row count of a collection."""
    res = client.query(coll, filter="", output_fields=["count(*)"])
    return int(res[0]["count(*)"])


class SparseRows:
    """One sparse BM25 vector per chunk, made on access from flat arrays (no million dicts held at once)."""

    def __init__(self, cols: NDArray[np.int64], values: NDArray[np.float32], bounds: NDArray[np.int64]) -> None:
        self._cols, self._values, self._bounds = cols, values, bounds

    def __len__(self) -> int:
        return len(self._bounds) - 1

    def __getitem__(self, i: int) -> dict[int, float]:
        lo, hi = int(self._bounds[i]), int(self._bounds[i + 1])
        row = dict(zip(self._cols[lo:hi].tolist(), self._values[lo:hi].tolist(), strict=True))
        return row or {NO_TERMS_DIM: 1.0}  # Milvus refuses an empty sparse vector; no query has dimension 0


def sparse_doc_vectors(tokens: list[list[str]]) -> tuple[dict[str, int], NDArray[np.int64], SparseRows]:
    """Our BM25 as sparse vectors: (vocabulary term -> id from 1, document frequency by id - 1, one vector per
    chunk holding tf(k1+1) / (tf + k1(1 - b + b dl/avgdl)) per term; a token-less chunk gets {0: 1.0})."""
    n = len(tokens)
    lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=n)
    total = int(lengths.sum())
    flat = [t for doc in tokens for t in doc]
    vocab = {t: i + 1 for i, t in enumerate(dict.fromkeys(flat))}
    if total == 0:
        empty = np.zeros(0, dtype=np.int64)
        return vocab, empty, SparseRows(empty, np.zeros(0, dtype=np.float32), np.zeros(n + 1, dtype=np.int64))
    terms = np.fromiter(map(vocab.__getitem__, flat), dtype=np.int64, count=total)
    del flat
    docs = np.repeat(np.arange(n, dtype=np.int64), lengths)
    width = len(vocab) + 1
    keys, tf = np.unique(docs * width + terms, return_counts=True)  # sorted by (doc, term)
    del docs, terms
    row, col = np.divmod(keys, width)
    df = np.bincount(col - 1, minlength=len(vocab)).astype(np.int64)
    norm = K1 * (1 - B + B * lengths / (total / n))
    tf_f = tf.astype(np.float64)
    values = (tf_f * (K1 + 1) / (tf_f + norm[row])).astype(np.float32)
    bounds = np.searchsorted(row, np.arange(n + 1))
    return vocab, df, SparseRows(col, values, bounds)


__all__ = [
    "BATCH_ROWS",
    "CURRENT_KEY",
    "DUMMY_VECTOR",
    "GET_BATCH",
    "LITE_FILE",
    "MAX_TOPK",
    "NO_TERMS_DIM",
    "PARTS",
    "SparseRows",
    "VERSION_RE",
    "batches",
    "blob_rows",
    "collection",
    "connect",
    "count_rows",
    "create_collections",
    "create_meta",
    "disconnect",
    "key64",
    "lite_path",
    "meta_collection",
    "new_version_name",
    "read_blob",
    "sparse_doc_vectors",
    "version_time",
    "versions_in",
]
