"""The metric functions on hand-checked cases."""

import math

import pytest

from eval import metrics as m


def test_normalise_is_squad_style() -> None:
    assert m.normalise("The  Eiffel-Tower, in Paris!") == "eiffel tower in paris"
    assert m.normalise("An apple a day") == "apple day"
    assert m.normalise("theory") == "theory"  # articles only as whole words


def test_exact_match_uses_normalisation_and_aliases() -> None:
    assert m.exact_match("The Eiffel Tower!", ["eiffel tower"]) == 1.0
    assert m.exact_match("Eiffel Tower in Paris", ["eiffel tower"]) == 0.0
    assert m.exact_match("La tour", ["Eiffel Tower", "la tour"]) == 1.0
    assert m.exact_match("Eiffel Tower [1][2].", ["eiffel tower"]) == 1.0  # citations ignored
    assert m.token_f1("Eiffel Tower [3]", ["eiffel tower"]) == 1.0
    assert m.answer_contained("[30] days", ["30 days"]) == 0.0  # a marker is not answer text


def test_token_f1_hand_checked() -> None:
    # pred words: cat sat on mat (4); ref: cat on mat (3); overlap 3 -> P 3/4, R 1, F1 6/7.
    assert m.token_f1("The cat sat on the mat", ["cat on mat"]) == pytest.approx(6 / 7)
    # Repeated words count per occurrence: pred x x y (3), ref x y y z (4);
    # overlap x1 + y1 = 2 -> P 2/3, R 1/2, F1 4/7.
    assert m.token_f1("x x y", ["x y y z"]) == pytest.approx(4 / 7)
    assert m.token_f1("nothing shared", ["cat"]) == 0.0
    # best over aliases
    assert m.token_f1("blue", ["red", "blue"]) == 1.0
    # both empty after normalisation count as a match, one empty as a miss
    assert m.token_f1("The", ["a"]) == 1.0
    assert m.token_f1("", ["cat"]) == 0.0


def test_answer_contained_on_word_boundaries() -> None:
    assert m.answer_contained("Refunds take 30 days.", ["30 days"]) == 1.0
    assert m.answer_contained("Refunds take 300 days.", ["30 days"]) == 0.0
    assert m.answer_contained("It is green.", ["red", "GREEN"]) == 1.0
    assert m.answer_contained("anything", ["!!!"]) == 0.0  # empty reference never matches


def test_groundedness_hand_checked() -> None:
    context = ["Refunds are processed within 30 days of the request."]
    # content tokens: refunds take 30 days ([1] and stopwords dropped); 3 of 4 in context.
    assert m.groundedness("Refunds take 30 days [1].", context) == pytest.approx(0.75)
    # repeats count: "blue blue red" -> blue, blue in context, red not: 2/3
    assert m.groundedness("blue blue red", ["the sky is blue"]) == pytest.approx(2 / 3)
    assert m.groundedness("Refunds take 30 days", []) is None  # no context
    assert m.groundedness("It is the [2].", context) is None  # no content tokens


def test_cited_numbers_and_docs() -> None:
    assert m.cited_numbers("see [2] and [1, 3][2]") == [2, 1, 3]
    sources = [{"index": 1, "doc_id": "a.md"}, {"index": 2, "doc_id": "b.md"}]
    assert m.cited_docs("as said [2].", sources) == (["b.md"], True)
    assert m.cited_docs("no markers", sources) == (["a.md", "b.md"], False)
    assert m.cited_docs("bogus [9]", sources) == ([], True)


def test_citation_accuracy_cases() -> None:
    sources = [{"index": 1, "doc_id": "a.md"}, {"index": 2, "doc_id": "b.md"}]
    assert m.citation_accuracy("yes [2]", sources, ["b.md"]) == 1.0
    assert m.citation_accuracy("yes [1]", sources, ["b.md"]) == 0.0
    assert m.citation_accuracy("yes [1, 2]", sources, ["b.md"]) == 1.0
    assert m.citation_accuracy("yes", sources, ["b.md"]) == 1.0  # implicit: all sources
    assert m.citation_accuracy("yes", sources, ["c.md"]) == 0.0
    assert m.citation_accuracy("yes [7]", sources, ["a.md"]) == 0.0  # cites nothing real
    assert m.citation_accuracy("yes [1]", [], ["a.md"]) is None  # no sources returned
    assert m.citation_accuracy("yes [1]", sources, []) is None  # no gold document


def test_retrieval_metrics_hand_checked() -> None:
    ranked = ["d1", "g1", "d2", "g2"]
    gold = ["g1", "g2"]
    assert m.recall_at_k(ranked, gold, 1) == 0.0
    assert m.recall_at_k(ranked, gold, 2) == 0.5
    assert m.recall_at_k(ranked, gold, 4) == 1.0
    assert m.mrr_at_k(ranked, gold, 10) == 0.5
    assert m.mrr_at_k(ranked, gold, 1) == 0.0
    # DCG = 1/log2(3) + 1/log2(5); ideal = 1 + 1/log2(3)
    expected = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert m.ndcg_at_k(ranked, gold, 4) == pytest.approx(expected)
    assert m.ndcg_at_k(ranked, gold, 4) == pytest.approx(0.65093, abs=1e-5)
    assert m.ndcg_at_k(["g1", "g2"], gold, 10) == pytest.approx(1.0)
    # ideal DCG is capped at k: one gold doc at rank 1 with k=1 is perfect
    assert m.ndcg_at_k(["g1", "x"], gold, 1) == pytest.approx(1.0)


def test_retrieval_metrics_deduplicate_documents() -> None:
    # Chunks of d1 twice, then g1: documents are [d1, g1], so g1 is rank 2, not 3.
    chunks = ["d1", "d1", "g1"]
    assert m.dedup_docs(chunks) == ["d1", "g1"]
    assert m.recall_at_k(chunks, ["g1"], 2) == 1.0
    assert m.mrr_at_k(chunks, ["g1"], 10) == 0.5
    assert m.ndcg_at_k(chunks, ["g1"], 2) == pytest.approx(1 / math.log2(3))
    # a gold doc found twice counts once
    assert m.ndcg_at_k(["g1", "g1"], ["g1"], 2) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="gold"):
        m.recall_at_k(chunks, [], 1)


def test_answer_in_context_is_chunk_level() -> None:
    chunks = ["nothing here", "the warranty lasts two years", "more"]
    assert m.answer_in_context(chunks, ["two years"], 1) == 0.0
    assert m.answer_in_context(chunks, ["two years"], 2) == 1.0
    assert m.answer_in_context(chunks, ["2 years", "Two Years"], 5) == 1.0


def test_aggregation_helpers() -> None:
    assert m.mean_or_none([1.0, None, 0.0]) == 0.5
    assert m.mean_or_none([None]) is None
    assert m.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert m.percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert m.percentile([], 50) is None
