"""Incremental re-indexing, rebuilds, and runs interrupted at the worst moments."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from retrieval import IndexBusyError, Retriever
from retrieval.embedding import Embedder
from retrieval.loaders import PARSER_VERSIONS
from retrieval.settings import RetrievalSettings
from tests.retrieval.conftest import CountingEmbedder
from tests.retrieval.corpus import QUERIES


def _points(retriever: Retriever, domain: str = "quokka") -> list[dict]:
    alias = retriever._store.alias_of(domain)
    return [r.payload or {} for r in retriever._store.scroll(alias, None)]


def _assert_consistent(
    retriever: Retriever, expected_docs: set[str], domain: str = "quokka"
) -> None:
    """Each document is there once: one content version, chunks 0..n-1, no duplicates."""
    points = _points(retriever, domain)
    by_doc: dict[str, list[dict]] = {}
    for payload in points:
        by_doc.setdefault(payload["doc_id"], []).append(payload)
    assert set(by_doc) == expected_docs
    for doc_id, chunks in by_doc.items():
        assert len({c["content_hash"] for c in chunks}) == 1, doc_id
        assert sorted(c["chunk_index"] for c in chunks) == list(range(chunks[0]["chunk_count"]))
    assert retriever.info(domain).documents == len(expected_docs)
    assert retriever.info(domain).chunks == len(points)


def test_a_new_html_parser_version_reindexes_html_only(
    retriever: Retriever, docs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    retriever.index("quokka", docs)
    monkeypatch.setitem(PARSER_VERSIONS, "html", "html-next")

    report = retriever.index("quokka", docs)

    assert report.updated == ["reference/api.html"] and not report.added and not report.deleted
    assert sorted(report.unchanged) == [
        "glossary.txt", "guides/backup.md", "guides/install.md", "manual.pdf"
    ]  # fmt: skip
    _assert_consistent(retriever, {*report.unchanged, *report.updated})


def test_edit_delete_and_add_files(
    retriever: Retriever, docs: Path, embedder: Embedder, backend: str
) -> None:
    retriever.index("quokka", docs)
    version = retriever.index_version("quokka")
    install = docs / "guides" / "install.md"
    install.write_text(
        install.read_text()
        .replace("TCP port 7443", "TCP port 9911")
        .replace("glibc 2.31", "glibc 2.35")
    )
    (docs / "glossary.txt").unlink()
    (docs / "guides" / "upgrade.md").write_text(
        "# Upgrades\n\nUpgrade one node at a time and wait for the green heartbeat.\n"
    )
    counting = CountingEmbedder(embedder)
    if backend == "edge":
        with pytest.raises(IndexBusyError):  # the folder is held by the first Retriever
            Retriever(retriever.settings, embedder=counting)
    retriever._embedder = counting  # count what this run embeds

    report = retriever.index("quokka", docs)

    assert report.added == ["guides/upgrade.md"]
    assert report.updated == ["guides/install.md"]
    assert report.deleted == ["glossary.txt"]
    assert sorted(report.unchanged) == ["guides/backup.md", "manual.pdf", "reference/api.html"]
    # Only the new and the changed document were embedded, each chunk once.
    install_chunks = retriever.document_chunks("quokka", "guides/install.md")
    upgrade_chunks = retriever.document_chunks("quokka", "guides/upgrade.md")
    assert sorted(counting.embedded) == sorted(
        c.heading + "\n" + c.text for c in install_chunks + upgrade_chunks
    )
    assert report.chunks_embedded == len(counting.embedded)
    # The old version's chunks are gone, the new ones are found.
    texts = " ".join(p["text"] for p in _points(retriever))
    assert "7443" not in texts and "2.31" not in texts and "9911" in texts
    hit = retriever.search("quokka", "TCP port", mode="sparse", doc_id="guides/install.md")[0]
    assert "9911" in hit.text
    for mode in ("hybrid", "dense", "sparse"):
        hits = retriever.search("quokka", "what is a pouch", k=10, mode=mode)  # type: ignore[arg-type]
        assert "glossary.txt" not in {h.doc_id for h in hits}
    _assert_consistent(retriever, set(QUERIES) - {"glossary.txt"} | {"guides/upgrade.md"})
    assert report.index_version != version and report.index_version == retriever.index_version(
        "quokka"
    )


def test_rebuild_switches_to_a_new_collection(retriever: Retriever, docs: Path) -> None:
    first = retriever.index("quokka", docs)
    report = retriever.index("quokka", docs, rebuild=True)
    assert report.rebuilt and sorted(report.added) == sorted(QUERIES)
    assert report.collection != first.collection
    assert report.index_version == f"{report.collection}@r1" == retriever.index_version("quokka")
    names = retriever._store.collections()
    assert names == [report.collection]  # the old one was dropped after the switch
    _assert_consistent(retriever, set(QUERIES))


def test_interrupted_update_keeps_the_old_index_and_a_rerun_completes_it(
    make_settings: Callable[..., RetrievalSettings], embedder: Embedder, docs: Path
) -> None:
    settings = make_settings(embedding={"chunks_per_step": 2})
    with Retriever(settings, embedder=embedder) as retriever:
        retriever.index("quokka", docs)
    for name in ("guides/install.md", "guides/backup.md"):
        path = docs / name
        path.write_text(path.read_text().replace("Quokka", "Quokka NG"))
    (docs / "guides" / "upgrade.md").write_text("# Upgrades\n\nOne node at a time.\n")
    (docs / "glossary.txt").unlink()

    failing = CountingEmbedder(embedder, fail_on_call=2)  # dies while embedding step 2
    with Retriever(settings, embedder=failing) as retriever:
        version = retriever.index_version("quokka")
        with pytest.raises(KeyboardInterrupt):
            retriever.index("quokka", docs)
        # Nothing was lost: every document still has one complete version, old or new,
        # and the removed file's chunks are still there (deletions come last).
        points = _points(retriever)
        by_doc = Counter(p["doc_id"] for p in points)
        assert {"glossary.txt", "guides/install.md", "guides/backup.md"} <= set(by_doc)
        for doc_id in by_doc:
            chunks = retriever.document_chunks("quokka", doc_id)
            assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
        for doc_id, query in QUERIES.items():
            assert retriever.search("quokka", query, k=1)[0].doc_id == doc_id
        assert retriever.index_version("quokka") != version  # content started to change

    counting = CountingEmbedder(embedder)
    with Retriever(settings, embedder=counting) as retriever:
        report = retriever.index("quokka", docs)
        assert report.deleted == ["glossary.txt"]
        _assert_consistent(retriever, set(QUERIES) - {"glossary.txt"} | {"guides/upgrade.md"})
        assert all(
            "Quokka NG" in c.text or "Quokka" not in c.text
            for doc in ("guides/install.md", "guides/backup.md")
            for c in retriever.document_chunks("quokka", doc)
        )
        # Step 1 of the failed run stored two chunks for good; the rerun did not redo them.
        total_new = sum(
            len(retriever.document_chunks("quokka", d))
            for d in ("guides/install.md", "guides/backup.md", "guides/upgrade.md")
        )
        assert report.chunks_embedded < total_new


def test_interrupted_before_old_chunks_were_deleted(
    retriever: Retriever, docs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    retriever.index("quokka", docs)
    path = docs / "guides" / "backup.md"
    path.write_text(path.read_text().replace("35 days", "90 days"))
    store = retriever._store

    def fail(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("injected after the upsert")

    with monkeypatch.context() as patch:
        patch.setattr(store, "delete_points", fail)
        with pytest.raises(KeyboardInterrupt):
            retriever.index("quokka", docs)
    hashes = {p["content_hash"] for p in _points(retriever) if p["doc_id"] == "guides/backup.md"}
    assert len(hashes) == 2  # both versions are stored, the newest is served
    assert "90 days" in " ".join(
        c.text for c in retriever.document_chunks("quokka", "guides/backup.md")
    )

    report = retriever.index("quokka", docs)
    assert report.updated == ["guides/backup.md"] and report.chunks_embedded == 0
    _assert_consistent(retriever, set(QUERIES))


def test_interrupted_first_build_is_invisible_then_resumed(
    make_settings: Callable[..., RetrievalSettings], embedder: Embedder, docs: Path
) -> None:
    settings = make_settings(embedding={"chunks_per_step": 3})
    failing = CountingEmbedder(embedder, fail_on_call=3)
    with Retriever(settings, embedder=failing) as retriever:
        with pytest.raises(KeyboardInterrupt):
            retriever.index("quokka", docs)
        assert not retriever.has_domain("quokka")  # searches never see a half-built index
    counting = CountingEmbedder(embedder)
    with Retriever(settings, embedder=counting) as retriever:
        report = retriever.index("quokka", docs)
        assert sorted(report.added) == sorted(QUERIES)
        # Complete documents of the first try were kept; only the rest was embedded again.
        assert 0 < report.chunks_embedded == len(counting.embedded) < report.chunks_total
        _assert_consistent(retriever, set(QUERIES))
        names = retriever._store.collections()
        assert names == [report.collection]
