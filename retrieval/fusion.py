"""Hybrid search: one dense and one sparse search, fused by reciprocal rank, in Python.

The engines can fuse too (the Query API's prefetch + RRF), but the fused order of equal
scores, which RRF produces often, then depends on the engine. Fusing here keeps rankings
identical on both backends: a hit at 0-based rank r in one list scores 1 / (k + r), with k
from `retrieval.rrf_k`; equal totals keep the order in which hits were first seen, dense
list first. The cost is a loop over at most 2 x depth hits.
"""

from __future__ import annotations

from collections.abc import Sequence

from retrieval.store import Scored, Search

RRF_K = 2.0  # qdrant-client's and the server's default (`retrieval.rrf_k` sets it)


def is_hybrid(search: Search) -> bool:
    return search.dense is not None and search.sparse is not None


def store_searches(search: Search) -> list[Search]:
    """What the store runs for one search: itself, or its dense and its sparse half."""
    if not is_hybrid(search):
        return [search]
    return [
        Search(limit=search.depth, dense=search.dense, where=search.where),
        Search(limit=search.depth, sparse=search.sparse, where=search.where),
    ]


def rrf(lists: Sequence[Sequence[Scored]], limit: int, k: float = RRF_K) -> list[Scored]:
    """Reciprocal-rank fusion of ranked lists; the best `limit`, best first."""
    scores: dict[str, float] = {}
    first: dict[str, Scored] = {}
    for points in lists:
        for rank, point in enumerate(points):
            scores[point.id] = scores.get(point.id, 0.0) + 1.0 / (k + rank)
            first.setdefault(point.id, point)
    ranked = sorted(scores, key=scores.__getitem__, reverse=True)[:limit]  # stable on ties
    return [Scored(i, scores[i], first[i].payload) for i in ranked]
