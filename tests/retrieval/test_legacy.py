"""An index folder written by qdrant-client's local mode (lorag before the embedded engine)
is migrated on first open: same domains, same points, same search results, backup kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from qdrant_client import QdrantClient

import retrieval.store_client
from retrieval import IndexBusyError, Retriever
from retrieval.embedding import Embedder
from retrieval.legacy import BACKUP
from retrieval.settings import RetrievalSettings
from tests.retrieval.corpus import QUERIES


def _write_local_mode_index(folder: Path, docs: Path, embedder: Embedder) -> dict:
    """Index `docs` the way lorag did before: qdrant-client local mode in `folder`."""
    settings = RetrievalSettings.model_validate({"qdrant": {"url": ":memory:"}})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            retrieval.store_client, "connect", lambda settings: QdrantClient(path=str(folder))
        )
        with Retriever(settings, embedder=embedder) as old:
            old.index("quokka", docs)
            old.index("other", docs / "guides")
            return {
                "info": old.info("quokka"),
                "hits": {q: old.search("quokka", q, k=3) for q in QUERIES.values()},
            }


def test_a_local_mode_folder_is_migrated_with_nothing_lost(
    tmp_path: Path, docs: Path, embedder: Embedder
) -> None:
    folder = tmp_path / "qdrant"
    before = _write_local_mode_index(folder, docs, embedder)
    assert (folder / "meta.json").is_file()

    settings = RetrievalSettings.model_validate({"qdrant": {"path": str(folder)}})
    with Retriever(settings, embedder=embedder) as retriever:
        assert [d.name for d in retriever.domains()] == ["other", "quokka"]
        info = retriever.info("quokka")
        assert (info.collection, info.documents, info.chunks, info.index_version) == (
            before["info"].collection,
            before["info"].documents,
            before["info"].chunks,
            before["info"].index_version,
        )
        for query, hits in before["hits"].items():
            now = retriever.search("quokka", query, k=3)
            assert [(h.doc_id, h.chunk_index) for h in now] == [
                (h.doc_id, h.chunk_index) for h in hits
            ]
            assert [h.score for h in now] == pytest.approx([h.score for h in hits], rel=1e-4)
        report = retriever.index("quokka", docs)  # nothing to redo: hashes and ids carried
        assert report.chunks_embedded == 0 and sorted(report.unchanged) == sorted(QUERIES)
    assert (folder / BACKUP / "meta.json").is_file() and not (folder / "meta.json").exists()
    with Retriever(settings, embedder=embedder) as retriever:  # a second open: no migration
        assert [d.name for d in retriever.domains()] == ["other", "quokka"]


def test_a_local_mode_folder_still_open_in_an_older_lorag_is_left_alone(
    tmp_path: Path, docs: Path, embedder: Embedder
) -> None:
    folder = tmp_path / "qdrant"
    _write_local_mode_index(folder, docs, embedder)
    holder = QdrantClient(path=str(folder))  # an old `lorag serve` still running
    try:
        settings = RetrievalSettings.model_validate({"qdrant": {"path": str(folder)}})
        with pytest.raises(IndexBusyError, match="older lorag"):
            Retriever(settings, embedder=embedder)
        assert (folder / "meta.json").is_file()
    finally:
        holder.close()
