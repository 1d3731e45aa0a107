"""Distractor passages for the scaled indexes: vectors and texts that behave like unrelated notes.

Repeating the corpus (the earlier filler) gives every chunk ~1,600 near-identical twins: HNSW recall and hit@5
then measure tie-breaking, not search. A large real collection is mostly passages unrelated to any one
question, so the filler here is drawn from models fitted to the corpus and keeps no structure a question
could match on purpose:

- dense: a Gaussian with the real chunk vectors' mean and full covariance, sampled through the Cholesky
  factor of the covariance and L2-normalised like the real vectors. It keeps the embedder's anisotropy (the
  shared mean direction, the correlated dimensions), so distractors are as similar to a question as a
  typical passage is, but no distractor is a paraphrase of a real one;
- keyword: token sequences drawn independently from the corpus's unigram distribution, with lengths drawn
  from the real chunks' token counts (the background "null" model of IR). Document frequencies then grow in
  proportion to the collection, so a question's terms keep the IDF they have in the corpus and match
  distractors as often as their frequency says, but never together the way a relevant passage matches them
  (no co-occurrence): the pessimistic case for term overlap, the honest one for co-occurrence.

The real chunks sit at seeded random rows among the distractors. `ScaledCorpus` serves chunks, tokens and
documents lazily from compact arrays, so a 1 M-chunk build holds the vectors (1.5 GB) and token ids, not a
million Python chunks.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
from numpy.typing import NDArray

from rag.types import Chunk, Document

DISTRACTOR_PREFIX = "distractor/"
_BLOCK = 65_536  # rows sampled at a time: bounds the float64 scratch to ~200 MB at 384 dims


def fit_gaussian(vectors: NDArray[np.floating]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean and lower Cholesky factor of the covariance of `vectors` (rows).

    With about as many chunks as dimensions the sample covariance is near-singular; a ridge of 1e-6 of the
    mean variance lets the factorisation succeed without changing the distribution measurably.
    """
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need at least 2 vectors (rows) to fit a covariance, got shape {x.shape}")
    mean = x.mean(axis=0)
    cov = np.cov(x, rowvar=False)
    ridge = 1e-6 * float(np.trace(cov)) / cov.shape[0]
    return mean, np.linalg.cholesky(cov + ridge * np.eye(cov.shape[0]))


def sample_distractors(
    mean: NDArray[np.float64], chol: NDArray[np.float64], n: int, *, seed: int, out: NDArray[np.float32] | None = None
) -> NDArray[np.float32]:
    """`n` L2-normalised float32 vectors drawn from N(mean, chol @ chol.T), in blocks (into `out` if given)."""
    dim = mean.shape[0]
    if out is None:
        out = np.empty((n, dim), dtype=np.float32)
    if out.shape != (n, dim):
        raise ValueError(f"out must be ({n}, {dim}), got {out.shape}")
    rng = np.random.default_rng(seed)
    for start in range(0, n, _BLOCK):
        m = min(_BLOCK, n - start)
        block = rng.standard_normal((m, dim)) @ chol.T
        block += mean
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + m] = block
    return out


@dataclass(frozen=True)
class UnigramModel:
    """The corpus's unigram distribution and its chunks' token counts."""

    vocab: list[str]
    probs: NDArray[np.float64]
    lengths: NDArray[np.int64]

    @classmethod
    def fit(cls, tokens: Sequence[Sequence[str]]) -> UnigramModel:
        counts = Counter(t for row in tokens for t in row)
        if not counts:
            raise ValueError("no tokens to fit a unigram model on")
        vocab = sorted(counts)
        freq = np.array([counts[t] for t in vocab], dtype=np.float64)
        lengths = np.array([len(row) for row in tokens if row], dtype=np.int64)
        return cls(vocab, freq / freq.sum(), lengths)

    def sample(self, n: int, *, seed: int) -> tuple[NDArray[np.int32], NDArray[np.int64]]:
        """Token ids of `n` passages, flat, and their offsets ((n + 1,), row i = ids[off[i]:off[i+1]])."""
        rng = np.random.default_rng(seed)
        lengths = rng.choice(self.lengths, size=n)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.empty(int(offsets[-1]), dtype=np.int32)
        cdf = np.cumsum(self.probs)
        cdf[-1] = 1.0
        step = 1 << 24
        for start in range(0, ids.size, step):
            u = rng.random(min(step, ids.size - start))
            ids[start : start + u.size] = np.searchsorted(cdf, u, side="right")
        return ids, offsets


class _View(Sequence[Any]):
    """A read-only sequence computed row by row by `get` (what `IndexBuild` needs of its lists)."""

    def __init__(self, n: int, get: Any) -> None:
        self._n, self._get = n, get

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> Any: ...
    @overload
    def __getitem__(self, i: slice) -> list[Any]: ...
    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self._get(j) for j in range(*i.indices(self._n))]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        return self._get(i)

    def __iter__(self) -> Any:
        return map(self._get, range(self._n))


class ScaledCorpus:
    """The real chunks at seeded random rows among `n - len(chunks)` distractors, served lazily.

    Distractor chunks are grouped into documents of as many chunks as a real document has on average;
    `chunks`, `tokens` and `documents` are sequences for `IndexBuild`, `real_rows[j]` is the row of
    real chunk j.
    """

    def __init__(
        self, chunks: Sequence[Chunk], tokens: Sequence[list[str]], documents: Sequence[Document], n: int, *, seed: int
    ) -> None:
        n0 = len(chunks)
        if n < n0:
            raise ValueError(f"a scaled corpus holds at least the {n0} real chunks, asked for {n}")
        self.n, self.n0 = n, n0
        self._chunks, self._tokens, self._docs = list(chunks), list(tokens), list(documents)
        rng = np.random.default_rng(seed)
        self.real_rows = np.sort(rng.choice(n, size=n0, replace=False)).astype(np.int64)
        self._is_real = np.zeros(n, dtype=bool)
        self._is_real[self.real_rows] = True
        self.n_distractors = n - n0
        self.per_doc = max(1, round(n0 / max(1, len(self._docs))))
        model = UnigramModel.fit(self._tokens)
        self._vocab = np.array(model.vocab, dtype=object)
        self._ids, self._offsets = model.sample(self.n_distractors, seed=seed + 1)
        self._cached: tuple[int, list[Chunk]] = (-1, [])
        self.chunks: Sequence[Chunk] = _View(n, self.chunk)
        self.tokens: Sequence[list[str]] = _View(n, self.token_list)
        n_doc = -(-self.n_distractors // self.per_doc)
        self.documents: Sequence[Document] = _View(len(self._docs) + n_doc, self._document)

    def _distractor(self, row: int) -> int:
        """The distractor number of a non-real row."""
        return row - int(np.searchsorted(self.real_rows, row))

    def _distractor_tokens(self, k: int) -> list[str]:
        return self._vocab[self._ids[self._offsets[k] : self._offsets[k + 1]]].tolist()

    def token_list(self, row: int) -> list[str]:
        if self._is_real[row]:
            return self._tokens[int(np.searchsorted(self.real_rows, row))]
        return self._distractor_tokens(self._distractor(row))

    def _doc_chunks(self, d: int) -> list[Chunk]:
        """The chunks of distractor document `d` (the last one built is kept: chunks come in row order)."""
        if self._cached[0] == d:
            return self._cached[1]
        doc_id = f"{DISTRACTOR_PREFIX}{d:07d}"
        out, start = [], 0
        for ordinal, k in enumerate(range(d * self.per_doc, min((d + 1) * self.per_doc, self.n_distractors))):
            # tokens joined by spaces (also between Chinese words): BM25 reads the tokens, not this text,
            # and a C-speed join keeps a 1 M-chunk build from spending minutes on display text
            text = " ".join(self._distractor_tokens(k))
            out.append(Chunk(
                chunk_id=f"{doc_id}#{ordinal}", doc_id=doc_id, heading_path=(), start=start,
                end=start + len(text), text=text, index_text=text, ordinal=ordinal,
            ))
            start += len(text) + 2
        self._cached = (d, out)
        return out

    def chunk(self, row: int) -> Chunk:
        if self._is_real[row]:
            return self._chunks[int(np.searchsorted(self.real_rows, row))]
        k = self._distractor(row)
        return self._doc_chunks(k // self.per_doc)[k % self.per_doc]

    def _document(self, i: int) -> Document:
        if i < len(self._docs):
            return self._docs[i]
        d = i - len(self._docs)
        text = "\n\n".join(c.text for c in self._doc_chunks(d))
        doc_id = f"{DISTRACTOR_PREFIX}{d:07d}"
        return Document(
            doc_id=doc_id, title=f"distractor {d}", text=text,
            sha256=hashlib.sha256(doc_id.encode()).hexdigest(), encoding="utf-8", size_bytes=len(text.encode()),
        )
