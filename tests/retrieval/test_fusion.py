"""Hybrid fusion: DBSF and RRF on hand-computed lists, and that the Retriever uses the setting."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

import pytest

from retrieval import Retriever
from retrieval import fusion as fusion_module
from retrieval.embedding import Embedder
from retrieval.fusion import dbsf, rrf
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


def test_dbsf_maps_each_lists_mean_plus_minus_3_sd_to_0_1() -> None:
    fused = dbsf([[Scored("x", 3.0, {}), Scored("y", 1.0, {})]], 2)
    sd = statistics.stdev([3.0, 1.0])  # sample sd, as Qdrant's DBSF
    assert [p.id for p in fused] == ["x", "y"]
    assert fused[0].score == pytest.approx((3.0 - 2.0 + 3 * sd) / (6 * sd))
    assert fused[0].score + fused[1].score == pytest.approx(1.0)  # symmetric about the mean
    # no spread (one point, or equal scores): the midpoint
    assert [p.score for p in dbsf([[Scored("x", 7.0, {})]], 1)] == [0.5]
    assert [p.score for p in dbsf([[Scored("x", 1.0, {}), Scored("y", 1.0, {})]], 2)] == [0.5, 0.5]


def test_dbsf_lets_a_clear_winner_beat_a_near_tie_where_rrf_cannot() -> None:
    # dense: ten near-equal scores led by "w"; sparse: "u" far ahead of nine close ones.
    dense = [Scored(i, 0.30 - 0.01 * n, {}) for n, i in enumerate("wgprstvxyz")]
    sparse_scores = (23.0, 12.0, 11.9, 11.3, 11.0, 10.5, 10.1, 9.8, 9.4, 9.0)
    sparse = [Scored(i, s, {}) for i, s in zip("ubcqjklmno", sparse_scores, strict=True)]
    # RRF sees two first places, 1/2 each, and keeps the dense one first.
    assert [p.id for p in rrf([dense, sparse], 2, k=2)] == ["w", "u"]
    assert [p.id for p in dbsf([dense, sparse], 2)] == ["u", "w"]


@pytest.mark.parametrize("backend", ["edge"])
@pytest.mark.parametrize(
    ("overrides", "method", "expected"),
    [({}, "dbsf", ()), ({"fusion": "rrf", "rrf_k": 61.0}, "rrf", (61.0,))],
    ids=["default-dbsf", "rrf-with-k"],
)
def test_the_retriever_fuses_with_the_configured_method(
    make_settings: Callable[..., RetrievalSettings],
    embedder: Embedder,
    docs: Path,
    monkeypatch: pytest.MonkeyPatch,
    overrides: dict[str, object],
    method: str,
    expected: tuple[float, ...],
) -> None:
    seen: list[tuple[float, ...]] = []
    real = getattr(fusion_module, method)

    def spy(lists, limit, *args):  # type: ignore[no-untyped-def]
        seen.append(args)
        return real(lists, limit, *args)

    monkeypatch.setattr(fusion_module, method, spy)
    with Retriever(make_settings(**overrides), embedder=embedder) as retriever:
        retriever.index("quokka", docs)
        assert retriever.search("quokka", "TCP port", mode="hybrid")
    assert seen == [expected]


@pytest.mark.parametrize("backend", ["edge", "server"])
def test_hybrid_hits_carry_payloads_fetched_after_fusion(
    make_settings: Callable[..., RetrievalSettings],
    embedder: Embedder,
    docs: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with Retriever(make_settings(), embedder=embedder) as retriever:
        retriever.index("quokka", docs)
        dense = retriever.search("quokka", "TCP port", k=3, mode="dense")
        hybrid = retriever.search("quokka", "TCP port", k=3, mode="hybrid")
        assert [h.text for h in hybrid] and all(h.text and h.doc_id for h in hybrid)
        assert {h.text for h in dense} & {h.text for h in hybrid}  # the same chunks' payloads
        store = retriever._store
        fetch = store.payloads
        asked: list[list[str]] = []

        def vanished(collection: str, ids: list[str]) -> dict[str, dict[str, object]]:
            asked.append(list(ids))
            found = fetch(collection, ids)
            found.pop(ids[0])  # deleted by another writer between the search and the fetch
            return found

        monkeypatch.setattr(store, "payloads", vanished)
        fewer = retriever.search("quokka", "TCP port", k=3, mode="hybrid")
        assert [len(a) for a in asked] == [len(hybrid)]  # one fetch, for the fused top k only
        assert [h.text for h in fewer] == [h.text for h in hybrid][1:]
