"""The index: written by ingest (`store.publish`), read by retrieval (`store.load`); `open_store(settings)` picks
the store, `IndexStore` (local files) or `MilvusStore`, by `RAG_INDEX_BACKEND`.

| module | its one job |
| --- | --- |
| `manifest.py` | file names of a version, `IndexBuild` (what a publish takes), `Manifest` and checksums |
| `keyword.py` | the two BM25 engines (rank_bm25, bm25s) behind `KeywordIndex` |
| `vectors.py` | FAISS flat and HNSW behind `VectorIndex` |
| `lock.py` | `WriteLock`: one writer per index directory |
| `loaded.py` | `LoadedIndex`: one version opened read-only, chunks from SQLite |
| `local.py` | `IndexStore`: versioned atomic publish, verified load, GC |
| `durable.py` | fsync'd writes and tree removal, what an atomic publish and a safe GC are made of |
| `milvus_schema.py` | Milvus collection names and schemas, the client, blobs, hashed keys, our BM25 as sparse rows |
| `milvus_index.py` | `MilvusIndex`: one Milvus version opened for queries (sparse BM25 of our tokens, dense) |
| `milvus.py` | `MilvusStore`: the same publish/load/GC as `IndexStore`, in Milvus Lite or a Milvus server |
| `backends.py` | `open_store`: `IndexStore` or `MilvusStore` by `RAG_INDEX_BACKEND` |

The engine, the retriever and ingest use a loaded index only through `IndexBackend`, below; `LoadedIndex`
is the local implementation of it, `MilvusIndex` the Milvus one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from rag.index.backends import open_store
from rag.index.keyword import (
    K1,
    RANK_BM25_MAX_CHUNKS,
    B,
    BM25sIndex,
    KeywordBackend,
    KeywordIndex,
    RankBM25Index,
    bm25_idf,
    choose_keyword_backend,
)
from rag.index.loaded import LoadedIndex
from rag.index.local import PUBLISH_STAGES, IndexStore
from rag.index.lock import WriteLock
from rag.index.manifest import (
    CURRENT_FILE,
    FORMAT_VERSION,
    SQLITE_FILE,
    TMP_PREFIX,
    VECTORS_FILE,
    IndexBuild,
    Manifest,
)
from rag.index.vectors import (
    FLAT_MAX_VECTORS,
    HNSW_EF_CONSTRUCTION,
    VectorIndex,
    VectorIndexKind,
    choose_vector_index,
)
from rag.types import Chunk, Document


class IndexBackend(Protocol):
    """What the engine, the retriever and ingest use of one loaded index version.

    Rows are the index's chunk numbers: `keyword_search`, `dense_search` and `similarities` speak rows,
    `chunks` turns them into chunks.
    """

    manifest: Manifest
    alias_groups: list[list[str]]  # the glossary: names of one thing, for query expansion
    user_words: list[str]  # words the tokenizer must keep whole
    vector_terms: list[str]  # glossary names with a row in term_vectors (the cross-lingual bridge)
    term_vectors: np.ndarray  # (len(vector_terms), dim) float32, embedded as queries

    def __len__(self) -> int: ...
    def close(self) -> None: ...

    # chunks and documents
    def chunks(self, rows: Sequence[int]) -> list[Chunk]: ...
    def doc_chunks(self, doc_id: str) -> list[Chunk]: ...
    def doc_rows(self, doc_id: str) -> list[int]: ...
    def document(self, doc_id: str) -> Document | None: ...
    def documents(self) -> list[dict]: ...

    # keyword
    def keyword_search(self, query: Mapping[str, float], n: int) -> list[tuple[int, float]]: ...
    def keyword_max_score(self, query: Mapping[str, float]) -> float: ...
    def idf(self, term: str) -> float: ...
    def doc_freq(self, term: str) -> int: ...
    def has_term(self, term: str) -> bool: ...

    # dense
    def dense_search(self, vector: np.ndarray, n: int) -> list[tuple[int, float]]: ...
    def similarities(self, queries: np.ndarray, rows: Sequence[int]) -> np.ndarray: ...

    # the reader's stored sentence vectors
    def reader_vectors(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]: ...


__all__ = [
    "B",
    "BM25sIndex",
    "CURRENT_FILE",
    "FLAT_MAX_VECTORS",
    "FORMAT_VERSION",
    "HNSW_EF_CONSTRUCTION",
    "IndexBackend",
    "IndexBuild",
    "IndexStore",
    "K1",
    "KeywordBackend",
    "KeywordIndex",
    "LoadedIndex",
    "Manifest",
    "PUBLISH_STAGES",
    "RANK_BM25_MAX_CHUNKS",
    "RankBM25Index",
    "SQLITE_FILE",
    "TMP_PREFIX",
    "VECTORS_FILE",
    "VectorIndex",
    "VectorIndexKind",
    "WriteLock",
    "bm25_idf",
    "choose_keyword_backend",
    "choose_vector_index",
    "open_store",
]
