"""Fusion of the BM25 and dense rankings: pure functions.

`score_fusion` (the default) keeps how far ahead a passage is: a passage whose BM25 score towers over the
rest wins even where the dense model ranks it low, which reciprocal rank fusion (`rrf`, ranks only) cannot
see.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence


def rrf(
    rankings: Mapping[str, Sequence[Hashable]],
    *,
    k: int = 60,
    weights: Mapping[str, float] | None = None,
) -> list[tuple[Hashable, float, dict[str, float]]]:
    """Fuse ranked lists of ids: score(id) = sum over lists of weight / (k + rank), rank starting at 1.

    Returns (id, fused score, contribution per list) sorted by score, ties broken by the first list
    that ranked the id higher, so the order is deterministic.
    """
    if k <= 0:
        raise ValueError("rrf k must be positive")
    scores: dict[Hashable, float] = {}
    parts: dict[Hashable, dict[str, float]] = {}
    best_rank: dict[Hashable, int] = {}
    for name, ranked in rankings.items():
        weight = 1.0 if weights is None else float(weights.get(name, 1.0))
        for rank, item in enumerate(ranked, start=1):
            contribution = weight / (k + rank)
            scores[item] = scores.get(item, 0.0) + contribution
            parts.setdefault(item, {})[name] = contribution
            best_rank[item] = min(best_rank.get(item, rank), rank)
    order = sorted(scores, key=lambda item: (-scores[item], best_rank[item]))
    return [(item, scores[item], parts[item]) for item in order]


def score_fusion(
    scores: Mapping[str, Mapping[Hashable, float]],
    *,
    weights: Mapping[str, float] | None = None,
    basis: Sequence[Hashable] | None = None,
) -> list[tuple[Hashable, float, dict[str, float]]]:
    """Distribution-based score fusion over the union of the candidates.

    Each retriever's scores are rescaled so that its mean - 3 sd maps to 0 and its mean + 3 sd to 1 (so one
    retriever's scale or spread cannot dominate), weighted and summed; a candidate a retriever did not score
    counts 0 there before rescaling. The mean and sd are those of the `basis` candidates when given (the top of
    each ranking), so candidates fetched from deeper down are scored without moving the scale. Returns (id, fused
    score, contribution per retriever) sorted by score, ties broken by first appearance (the first mapping's order
    first), so the order is deterministic.
    """
    candidates = list(dict.fromkeys(item for ranked in scores.values() for item in ranked))
    if not candidates:
        return []
    fused = dict.fromkeys(candidates, 0.0)
    parts: dict[Hashable, dict[str, float]] = {item: {} for item in candidates}
    for name, by_item in scores.items():
        weight = 1.0 if weights is None else float(weights.get(name, 1.0))
        values = [float(by_item.get(item, 0.0)) for item in candidates]
        sample = values if not basis else [float(by_item.get(item, 0.0)) for item in basis]
        mean = sum(sample) / len(sample)
        spread = 6 * math.sqrt(sum((v - mean) ** 2 for v in sample) / len(sample))
        for item, value in zip(candidates, values, strict=True):
            contribution = weight * ((value - mean) / spread + 0.5 if spread > 0 else 0.5)
            fused[item] += contribution
            parts[item][name] = contribution
    order = sorted(range(len(candidates)), key=lambda i: (-fused[candidates[i]], i))
    return [(candidates[i], fused[candidates[i]], parts[candidates[i]]) for i in order]
