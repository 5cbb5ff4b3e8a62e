"""Reciprocal-rank fusion: what `retrieval.rrf_k` changes, and that the Retriever uses it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from retrieval import Retriever
from retrieval import retriever as retriever_module
from retrieval.embedding import Embedder
from retrieval.fusion import rrf
from retrieval.settings import RetrievalSettings
from retrieval.store import Scored

DENSE = [Scored(i, 1.0, {"id": i}) for i in ("a", "b", "c", "d")]
SPARSE = [Scored(i, 1.0, {"id": i}) for i in ("e", "f", "g", "c")]


def test_a_small_k_favours_each_lists_top_hit_and_a_large_k_agreement() -> None:
    # k=2: a and e score 1/2 each; c, 3rd and 4th, scores 1/4 + 1/5 = 0.45.
    assert [p.id for p in rrf([DENSE, SPARSE], 3, k=2)] == ["a", "e", "c"]
    # k=61 (textbook RRF): c scores 1/63 + 1/64, more than a's or e's 1/61 alone.
    assert [p.id for p in rrf([DENSE, SPARSE], 3, k=61)] == ["c", "a", "e"]


def test_ties_keep_the_dense_list_first_and_scores_are_the_fused_ones() -> None:
    fused = rrf([DENSE[:1], SPARSE[:1]], 2, k=2)
    assert [(p.id, p.score) for p in fused] == [("a", 0.5), ("e", 0.5)]


@pytest.mark.parametrize("backend", ["edge"])
def test_the_retriever_fuses_with_the_configured_k(
    make_settings: Callable[..., RetrievalSettings],
    embedder: Embedder,
    docs: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[float] = []

    def spy(lists, limit, k):  # type: ignore[no-untyped-def]
        seen.append(k)
        return rrf(lists, limit, k)

    monkeypatch.setattr(retriever_module, "rrf", spy)
    with Retriever(make_settings(rrf_k=61.0), embedder=embedder) as retriever:
        retriever.index("quokka", docs)
        assert retriever.search("quokka", "TCP port", mode="hybrid")
    assert seen == [61.0]
