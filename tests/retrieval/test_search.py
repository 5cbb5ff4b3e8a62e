"""Index a real corpus into each store backend and search it with the real model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from retrieval import (
    DomainNotFoundError,
    Hit,
    InvalidDomainError,
    Retriever,
)
from retrieval.embedding import Embedder
from retrieval.indexer import point_id
from retrieval.prompt import render_context
from retrieval.settings import RetrievalSettings
from tests.retrieval.corpus import QUERIES

ALL_DOCS = sorted(QUERIES)


@pytest.fixture
def indexed(retriever: Retriever, docs: Path) -> Retriever:
    report = retriever.index("quokka", docs)
    assert sorted(report.added) == ALL_DOCS
    assert report.skipped == [] and report.deleted == [] and report.unchanged == []
    return retriever


@pytest.mark.parametrize("mode", ["hybrid", "dense", "sparse"])
def test_each_document_is_found_first_for_its_question(indexed: Retriever, mode: str) -> None:
    for doc_id, query in QUERIES.items():
        hits = indexed.search("quokka", query, k=3, mode=mode)  # type: ignore[arg-type]
        assert hits, (mode, query)
        assert hits[0].doc_id == doc_id, (mode, query, [h.doc_id for h in hits])
        assert len(hits) <= 3
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_hits_carry_what_prompts_and_citations_need(indexed: Retriever) -> None:
    hit = indexed.search("quokka", QUERIES["guides/install.md"], k=1, mode="dense")[0]
    assert hit.source == "guides/install.md"
    assert hit.heading == "Installing Quokka > Firewall ports"
    assert "7443" in hit.text
    assert hit.index_version == indexed.index_version("quokka")
    assert render_context([hit]).startswith(
        "[1] guides/install.md > Installing Quokka > Firewall ports\nOpen TCP port 7443"
    )


def test_payload_holds_every_field(indexed: Retriever) -> None:
    records = list(indexed._store.scroll(indexed._store.alias_of("quokka"), None))
    assert records
    for record in records:
        payload = record.payload or {}
        for field in (
            "doc_id",
            "source",
            "heading",
            "chunk_index",
            "text",
            "content_hash",
            "indexed_at",
            "tags",
            "chunk_count",
        ):
            assert field in payload, field
        # Point ids are a pure function of (document, content, position).
        assert str(record.id) == point_id(
            payload["doc_id"], payload["content_hash"], payload["chunk_index"]
        )
    tags = {r.payload["doc_id"]: r.payload["tags"] for r in records if r.payload}
    assert tags["guides/install.md"] == ["linux", "setup"]
    assert tags["reference/api.html"] == ["api", "reference"]


def test_filters_by_source_prefix_tags_and_document(indexed: Retriever) -> None:
    query = "Quokka"
    in_guides = indexed.search("quokka", query, k=20, source_prefix="guides/")
    assert {h.doc_id for h in in_guides} == {"guides/install.md", "guides/backup.md"}
    one_file = indexed.search("quokka", query, k=20, source_prefix="guides/backup.md")
    assert {h.doc_id for h in one_file} == {"guides/backup.md"}
    assert indexed.search("quokka", query, k=20, source_prefix="guid") == []  # whole components
    tagged = indexed.search("quokka", query, k=20, tags=["maintenance", "api"], mode="dense")
    assert {h.doc_id for h in tagged} == {"guides/backup.md", "reference/api.html"}
    only = indexed.search("quokka", query, k=20, doc_id="glossary.txt", mode="sparse")
    assert {h.doc_id for h in only} == {"glossary.txt"}


def test_search_many_matches_single_searches(indexed: Retriever) -> None:
    queries = list(QUERIES.values())
    for mode in ("hybrid", "dense", "sparse"):
        batched = indexed.search_many("quokka", queries, k=4, mode=mode)  # type: ignore[arg-type]
        single = [indexed.search("quokka", q, k=4, mode=mode) for q in queries]  # type: ignore[arg-type]
        assert [[h.doc_id for h in hits] for hits in batched] == [
            [h.doc_id for h in hits] for hits in single
        ]
        for many, one in zip(batched, single, strict=True):
            assert [h.score for h in many] == pytest.approx([h.score for h in one], rel=1e-4)


def test_a_query_without_indexed_words_finds_nothing_sparse(indexed: Retriever) -> None:
    assert indexed.search("quokka", "zzyzx qwxv", mode="sparse") == []
    assert indexed.search("quokka", "???", mode="sparse") == []
    assert indexed.search("quokka", "???", mode="hybrid")  # falls back to the dense vector


def test_document_chunks_returns_a_document_in_order(indexed: Retriever) -> None:
    chunks = indexed.document_chunks("quokka", "guides/install.md")
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    assert [c.heading for c in chunks] == [
        "Installing Quokka",
        "Installing Quokka > From the package repository",
        "Installing Quokka > Firewall ports",
    ]
    assert all(isinstance(c, Hit) and c.doc_id == "guides/install.md" for c in chunks)
    assert indexed.document_chunks("quokka", "no/such.md") == []


def test_domains_and_their_versions(indexed: Retriever, docs: Path) -> None:
    (info,) = indexed.domains()
    assert info.name == "quokka"
    assert info.documents == 5
    assert info.chunks == len(list(indexed._store.scroll(info.collection, ["doc_id"])))
    assert info.embedding_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert info.dimension == 384
    assert info.collection.startswith("lorag.quokka.")
    assert info.index_version == indexed.index_version("quokka") == f"{info.collection}@r1"
    assert indexed.has_domain("quokka") and not indexed.has_domain("other")
    assert indexed.info("quokka") == info
    # A rerun with nothing changed leaves the version alone and stores nothing twice.
    report = indexed.index("quokka", docs)
    assert sorted(report.unchanged) == ALL_DOCS and report.chunks_embedded == 0
    assert report.index_version == info.index_version
    assert indexed.info("quokka").chunks == info.chunks


def test_bad_names_queries_and_unknown_domains(indexed: Retriever) -> None:
    for name in ("Quokka", "", "a/b", "-x", "x" * 64, "a.b"):
        with pytest.raises(InvalidDomainError, match="invalid domain name"):
            indexed.search(name, "q")
    with pytest.raises(
        DomainNotFoundError, match=r"no index for domain 'nope' \(indexed domains: quokka\)"
    ):
        indexed.search("nope", "q")
    with pytest.raises(ValueError, match="non-empty"):
        indexed.search("quokka", "   ")
    with pytest.raises(ValueError, match="unknown search mode"):
        indexed.search("quokka", "q", mode="fuzzy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must be"):
        indexed.search("quokka", "q", k=0)


def test_drop_removes_the_domain(indexed: Retriever) -> None:
    collection = indexed.info("quokka").collection
    indexed.drop("quokka")
    assert not indexed.has_domain("quokka") and indexed.domains() == []
    assert collection not in indexed._store.collections()
    with pytest.raises(DomainNotFoundError):
        indexed.drop("quokka")


@pytest.mark.parametrize(
    ("cache_size", "expected"),
    [
        (1024, [["what is a pouch", "what is a hop"], ["new question"]]),
        (0, [["what is a pouch", "what is a hop"], ["what is a hop", "new question"]]),
    ],
)
def test_repeated_queries_come_from_the_query_cache_unless_it_is_off(
    embedder: Embedder,
    monkeypatch: pytest.MonkeyPatch,
    cache_size: int,
    expected: list[list[str]],
) -> None:
    encoded: list[list[str]] = []
    real = Embedder._encode_queries

    def counting(self: Embedder, texts: list[str]):
        encoded.append(list(texts))
        return real(self, texts)

    monkeypatch.setattr(Embedder, "_encode_queries", counting)
    monkeypatch.setattr(embedder, "query_cache_size", cache_size)
    embedder.clear_query_cache()
    first = embedder.embed_queries(["what is a pouch", "what is a hop", "what is a pouch"])
    again = embedder.embed_queries(["what is a hop", "new question"])
    assert encoded == expected  # a question twice in one call is encoded once either way
    assert (first[0] == first[2]).all() and (again[0] == first[1]).all()
    assert again.shape == (2, embedder.dimension)
    assert len(embedder._query_cache) == min(cache_size, 3)


@pytest.mark.parametrize("backend", ["edge"])
def test_searches_and_filters_after_the_engine_optimised_the_collection(
    make_settings: Callable[..., RetrievalSettings], embedder: Embedder, docs: Path
) -> None:
    settings = make_settings(qdrant={"hnsw_min_points": 0})  # optimise after every run
    with Retriever(settings, embedder=embedder) as retriever:
        retriever.index("quokka", docs)
        (docs / "glossary.txt").unlink()
        retriever.index("quokka", docs)  # deletes, then optimises again
        for mode in ("hybrid", "dense", "sparse"):
            for doc_id, query in QUERIES.items():
                if doc_id != "glossary.txt":
                    hit = retriever.search("quokka", query, k=1, mode=mode)[0]  # type: ignore[arg-type]
                    assert hit.doc_id == doc_id, (mode, query)
        guides = retriever.search("quokka", "Quokka", k=20, source_prefix="guides")
        assert {h.doc_id for h in guides} == {"guides/install.md", "guides/backup.md"}
        assert retriever.info("quokka").documents == len(QUERIES) - 1
