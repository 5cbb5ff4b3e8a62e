"""Searches from several threads while a rebuild or an update runs: none fails or is empty."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from retrieval import Retriever
from retrieval.embedding import Embedder
from retrieval.settings import RetrievalSettings
from tests.retrieval.corpus import QUERIES

SEARCHERS = 3
MAX_SEARCHES = 2000  # per thread: a bound, in case the index run never ends


def _run_with_searchers(
    retriever: Retriever, work: Callable[[Callable[[str, int, int], None]], object]
) -> tuple[list[str], list[BaseException], set[str]]:
    """Run `work(progress)` while SEARCHERS threads search; progress waits, at the second
    embedding step, until every searcher has completed a search during the run."""
    stop = threading.Event()
    searched_during = [threading.Event() for _ in range(SEARCHERS)]
    running = threading.Event()
    wrong: list[str] = []
    errors: list[BaseException] = []
    versions: set[str] = set()
    queries = list(QUERIES.items())

    def search(number: int) -> None:
        try:
            for count in range(MAX_SEARCHES):
                if stop.is_set():
                    return
                doc_id, query = queries[(number + count) % len(queries)]
                hits = retriever.search("quokka", query, k=2, mode="hybrid")
                if not hits or hits[0].doc_id != doc_id:
                    wrong.append(f"{query!r}: {[h.doc_id for h in hits]}")
                versions.add(hits[0].index_version if hits else "")
                if running.is_set():
                    searched_during[number].set()
        except BaseException as err:  # noqa: BLE001 - reported by the test
            errors.append(err)

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "embed" and done > 0 and not running.is_set():
            running.set()
            for event in searched_during:
                assert event.wait(timeout=60), "a searcher made no progress during the run"

    threads = [threading.Thread(target=search, args=(n,)) for n in range(SEARCHERS)]
    for thread in threads:
        thread.start()
    try:
        work(progress)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert all(event.is_set() for event in searched_during)
    return wrong, errors, versions


def test_rebuild_and_update_while_searching(
    make_settings: Callable[..., RetrievalSettings], embedder: Embedder, docs: Path
) -> None:
    with Retriever(make_settings(embedding={"chunks_per_step": 2}), embedder=embedder) as retriever:
        first = retriever.index("quokka", docs)

        wrong, errors, versions = _run_with_searchers(
            retriever,
            lambda progress: retriever.index("quokka", docs, rebuild=True, progress=progress),
        )
        assert errors == [] and wrong == []
        assert first.index_version in versions  # served by the old index while building
        after_rebuild = retriever.index_version("quokka")
        assert after_rebuild != first.index_version

        # An update of every document: each search still finds its document, old or new.
        for name in QUERIES:
            path = docs / name
            if path.suffix != ".pdf":
                path.write_text(path.read_text().replace("Quokka", "Quokka Pro"))
        wrong, errors, versions = _run_with_searchers(
            retriever, lambda progress: retriever.index("quokka", docs, progress=progress)
        )
        assert errors == [] and wrong == []
        assert retriever.index_version("quokka") != after_rebuild
