"""`lorag index` killed with SIGKILL at the worst moments, on the embedded engine.

Each case runs the real command line in a child process that kills itself (SIGKILL: no
`finally`, no flush, no close) when the store reaches a chosen call, then checks that the
previous index is searchable on reopen and that a rerun completes it with no duplicates and
no lost documents.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from retrieval import Retriever
from retrieval.embedding import Embedder
from retrieval.settings import RetrievalSettings
from tests.retrieval.corpus import QUERIES
from tests.retrieval.test_incremental import _assert_consistent

pytestmark = pytest.mark.parametrize("backend", ["edge"])

# Runs `lorag ARGS...` and SIGKILLs itself on the Nth call (1-based) of EdgeStore.METHOD,
# before the call ("before") or right after it returned ("after").
DRIVER = """
import os, signal, sys
from retrieval.store_edge import EdgeStore
method, nth, when = sys.argv[1], int(sys.argv[2]), sys.argv[3]
original = getattr(EdgeStore, method)
calls = 0
def tripwire(self, *args, **kwargs):
    global calls
    calls += 1
    if calls == nth and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    result = original(self, *args, **kwargs)
    if calls == nth and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
    return result
setattr(EdgeStore, method, tripwire)
sys.argv = ["lorag", *sys.argv[4:]]
from lorag.cli import main
main()
"""


def _killed_index(
    settings: RetrievalSettings, docs: Path, kill: tuple[str, int, str], *extra: str
) -> None:
    env = {
        **os.environ,
        "LORAG_RETRIEVAL__QDRANT__PATH": str(settings.qdrant.path),
        "LORAG_RETRIEVAL__EMBEDDING__CHUNKS_PER_STEP": "2",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    env.pop("LORAG_CONFIG", None)
    method, nth, when = kill
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            DRIVER,
            method,
            str(nth),
            when,
            "index",
            "quokka",
            str(docs),
            *extra,
        ],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]


def _assert_complete(retriever: Retriever, expected: set[str]) -> None:
    """Every expected document once, in one complete version; no other collection left."""
    _assert_consistent(retriever, expected)
    assert retriever._store.collections() == [retriever.info("quokka").collection]


def _index_edit_and_kill(
    make_settings: Callable[..., RetrievalSettings],
    embedder: Embedder,
    docs: Path,
    kill: tuple[str, int, str],
    *extra: str,
) -> tuple[RetrievalSettings, str, set[str]]:
    """Index `docs`, edit them, and run a `lorag index` that gets killed; the settings, the
    first collection and the document set the edit leaves."""
    settings = make_settings()
    with Retriever(settings, embedder=embedder) as retriever:
        first = retriever.index("quokka", docs).collection
    expected = _edit(docs)
    _killed_index(settings, docs, kill, *extra)
    return settings, first, expected


def _edit(docs: Path) -> set[str]:
    """Change two documents, add one, delete one; the document set afterwards."""
    for name in ("guides/install.md", "guides/backup.md"):
        path = docs / name
        path.write_text(path.read_text().replace("Quokka", "Quokka NG"))
    (docs / "guides" / "upgrade.md").write_text("# Upgrades\n\nOne node at a time.\n")
    (docs / "glossary.txt").unlink()
    return set(QUERIES) - {"glossary.txt"} | {"guides/upgrade.md"}


@pytest.mark.parametrize(
    "kill",
    [("upsert", 2, "after"), ("delete_points", 1, "before"), ("optimize", 1, "before")],
    ids=["mid-write", "before-deletes", "before-optimize"],
)
def test_killed_update_keeps_the_index_and_a_rerun_completes_it(
    make_settings: Callable[..., RetrievalSettings],
    embedder: Embedder,
    docs: Path,
    kill: tuple[str, int, str],
) -> None:
    settings, _, expected = _index_edit_and_kill(make_settings, embedder, docs, kill)

    with Retriever(settings, embedder=embedder) as retriever:
        by_doc = Counter(
            r.payload["doc_id"]
            for r in retriever._store.scroll(retriever._store.alias_of("quokka"), ["doc_id"])
        )
        # Nothing lost: deletions come last, so the removed file is gone only if every
        # write before them is in.
        assert set(QUERIES) - {"glossary.txt"} <= set(by_doc)
        if kill[0] != "optimize":
            assert "glossary.txt" in by_doc
        for doc_id, query in QUERIES.items():
            if doc_id in by_doc:
                assert retriever.search("quokka", query, k=1)[0].doc_id == doc_id
        for doc_id in by_doc:
            chunks = retriever.document_chunks("quokka", doc_id)
            assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
        report = retriever.index("quokka", docs)
        assert report.deleted == ([] if kill[0] == "optimize" else ["glossary.txt"])
        _assert_complete(retriever, expected)
        assert retriever._store.metadata(retriever.info("quokka").collection)["state"] == "ready"
        assert all(
            "Quokka NG" in c.text or "Quokka" not in c.text
            for doc in ("guides/install.md", "guides/backup.md")
            for c in retriever.document_chunks("quokka", doc)
        )


@pytest.mark.parametrize(
    "kill",
    [("upsert", 3, "after"), ("switch_alias", 1, "before"), ("drop_collection", 1, "before")],
    ids=["mid-build", "before-switch", "after-switch"],
)
def test_killed_rebuild_serves_one_whole_index_and_a_rerun_completes_it(
    make_settings: Callable[..., RetrievalSettings],
    embedder: Embedder,
    docs: Path,
    kill: tuple[str, int, str],
) -> None:
    settings, first, expected = _index_edit_and_kill(
        make_settings, embedder, docs, kill, "--rebuild"
    )

    with Retriever(settings, embedder=embedder) as retriever:
        live = retriever.info("quokka").collection
        if kill[0] == "drop_collection":  # the switch happened: the new index serves
            assert live != first
            served = {r.payload["doc_id"] for r in retriever._store.scroll(live, ["doc_id"])}
            assert served == expected
            assert first in retriever._store.collections()  # not yet dropped
        else:  # the old index serves, whole
            assert live == first
            for doc_id, query in QUERIES.items():
                assert retriever.search("quokka", query, k=1)[0].doc_id == doc_id
        retriever.index("quokka", docs, rebuild=kill[0] != "drop_collection")
        _assert_complete(retriever, expected)


def test_killed_first_build_is_invisible_and_a_rerun_completes_it(
    make_settings: Callable[..., RetrievalSettings], embedder: Embedder, docs: Path
) -> None:
    settings = make_settings()
    _killed_index(settings, docs, ("upsert", 2, "after"))
    with Retriever(settings, embedder=embedder) as retriever:
        assert not retriever.has_domain("quokka")
        report = retriever.index("quokka", docs)
        assert sorted(report.added) == sorted(QUERIES)
        assert 0 < report.chunks_embedded < report.chunks_total  # resumed, not redone
        _assert_complete(retriever, set(QUERIES))
