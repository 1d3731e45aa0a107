"""Passages ranked up by their best sentence.

A question often asks about one sentence of a long passage (what a dark roast wants is one sentence of a
section on brewing temperature): its vector is closer to that sentence's than to the passage's, which pools
every other sentence too. Ingest stores a vector for every sentence the reader may quote (with its
heading); the retriever adds to each fused candidate how far its best sentence falls short of the best one
among the candidates:

    score' = score + weight x top score x (best sentence similarity - highest best sentence similarity)

so the top candidate's scale is kept and a passage whose best sentence matches as well as any loses nothing.
Measured on the evaluation sets (weight 3, Chinese questions only): train hit@5 0.857 -> 0.883, calibration MRR
0.714 -> 0.765, dev MRR 0.972 -> 0.971.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache
from typing import Protocol

import numpy as np

from rag.answer.reader import reader_texts
from rag.types import Chunk, Hit


class SentenceVectors(Protocol):
    """What this needs of the index: the stored vectors of the reader's sentence texts."""

    def reader_vectors(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]: ...


def best_sentence_similarities(index: SentenceVectors, vector: np.ndarray, hits: Sequence[Hit]) -> list[float] | None:
    """Per hit, the highest cosine of the (normalized) question vector to one of its sentences' stored vectors;
    0 for a passage with no sentence the reader could quote (only headings, links or citation marks). None when
    a sentence has no stored vector (an index built before they were stored): then nothing is compared, rather
    than a passage ranked down for a vector it lacks."""
    texts = [_sentence_texts(hit.chunk) for hit in hits]
    flat = [text for group in texts for text in group]
    if not flat:
        return None
    vectors, found = index.reader_vectors(flat)
    if not found.all():
        return None
    norm = float(np.linalg.norm(vector)) or 1.0
    sims = vectors @ (np.asarray(vector, dtype=np.float32) / norm)
    out, start = [], 0
    for group in texts:
        out.append(float(sims[start : start + len(group)].max()) if group else 0.0)
        start += len(group)
    return out


@lru_cache(maxsize=4096)
def _sentence_texts(chunk: Chunk) -> tuple[str, ...]:
    """The reader's texts of one chunk (cut once: the same passages come back question after question)."""
    return tuple(reader_texts([chunk]))


def rescored(hits: Sequence[Hit], similarities: Sequence[float], weight: float) -> list[Hit]:
    """The hits with their best sentence's shortfall added to their score, best first (ties keep their order)."""
    if not hits:
        return []
    top = max(hits[0].score, 1e-9)
    peak = max(similarities)
    scored = [
        replace(hit, score=hit.score + weight * top * (sim - peak), sentence_similarity=sim)
        for hit, sim in zip(hits, similarities, strict=True)
    ]
    return sorted(scored, key=lambda hit: -hit.score)
