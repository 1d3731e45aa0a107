"""Reciprocal rank fusion: a pure function over ranked lists."""

from __future__ import annotations

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
