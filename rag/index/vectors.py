"""The dense half of an index: FAISS inner-product search (exact flat or HNSW) behind the `VectorIndex` Protocol.

Vectors are L2-normalised, so an inner product is a cosine similarity; row `i` of the FAISS index is chunk
row `i`. `write_faiss` builds and writes the file at publish, `FaissVectors.read` memory-maps it at load, and
`choose_vector_index` picks flat or HNSW for a setting and a vector count.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import faiss
import numpy as np
from numpy.typing import NDArray

# `auto` vector index: exact flat search up to this many vectors, HNSW above.
FLAT_MAX_VECTORS = 100_000
HNSW_EF_CONSTRUCTION = 80

VectorIndexKind = Literal["auto", "flat", "hnsw"]
VECTOR_INDEX_KINDS: tuple[str, ...] = ("flat", "hnsw")  # the concrete kinds a manifest may record


class VectorIndex(Protocol):
    """Inner-product search over one index's normalised chunk vectors, by row."""

    @property
    def ntotal(self) -> int: ...
    @property
    def dim(self) -> int: ...
    def search(self, vector: np.ndarray, n: int) -> list[tuple[int, float]]: ...
    def vectors(self, rows: Sequence[int]) -> np.ndarray: ...
    def similarities(self, queries: np.ndarray, rows: Sequence[int]) -> np.ndarray: ...


class FaissVectors:
    """A FAISS flat or HNSW inner-product index (usually memory-mapped), read-only."""

    def __init__(self, index: Any) -> None:
        self._index = index

    @classmethod
    def read(cls, path: Path) -> FaissVectors:
        """Memory-map the index where FAISS supports it (flat and HNSW do), else read it."""
        for flags in (faiss.IO_FLAG_MMAP_IFC, faiss.IO_FLAG_MMAP, 0):
            try:
                return cls(faiss.read_index(str(path), flags))
            except RuntimeError as exc:
                last = exc
        raise last

    def prepare_queries(self, kind: str, hnsw_ef_search: int) -> None:
        """Set HNSW's search breadth and run single queries on one OpenMP thread."""
        if kind == "hnsw":
            faiss.downcast_index(self._index).hnsw.efSearch = hnsw_ef_search
        faiss.omp_set_num_threads(1)  # single queries are faster without OpenMP fan-out on small machines

    @property
    def ntotal(self) -> int:
        """Number of vectors."""
        return int(self._index.ntotal)

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self._index.d)

    def search(self, vector: np.ndarray, n: int) -> list[tuple[int, float]]:
        """Top-n (row, inner product) for a normalised query vector (= cosine similarity)."""
        index = self._index
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
        index = self._index
        ids = np.asarray(rows, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if ids.min() < 0 or ids.max() >= index.ntotal:
            raise IndexError(f"row out of range (index has {index.ntotal})")
        return index.reconstruct_batch(ids)

    def similarities(self, queries: np.ndarray, rows: Sequence[int]) -> np.ndarray:
        """Exact similarity of each row's stored vector to the closest of `queries` ((k, dim) or (dim,))."""
        return (self.vectors(rows) @ np.atleast_2d(queries).T).max(axis=1)


def choose_vector_index(kind: str, n_vectors: int) -> str:
    """The concrete vector index kind for a setting and a vector count."""
    if kind == "auto":
        return "flat" if n_vectors <= FLAT_MAX_VECTORS else "hnsw"
    if kind not in VECTOR_INDEX_KINDS:
        raise ValueError(f"unknown vector index {kind!r}")
    return kind


def write_faiss(path: Path, vectors: NDArray[np.float32], kind: str, hnsw_m: int) -> None:
    """Build a flat or HNSW inner-product index over `vectors` (row i = id i) and write it to `path`."""
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


__all__ = [
    "FLAT_MAX_VECTORS",
    "FaissVectors",
    "HNSW_EF_CONSTRUCTION",
    "VECTOR_INDEX_KINDS",
    "VectorIndex",
    "VectorIndexKind",
    "choose_vector_index",
    "write_faiss",
]
