"""The server's use of `retrieval.Retriever`: searches and re-index runs off the event loop.

The Retriever's calls block (embedding, Qdrant), so they run in worker threads; one
Retriever serves the whole process (the embedded index allows one process per folder).

Concurrent searches share work: searches of one domain with the same `k` and mode that
arrive while such a search runs wait for it to end and then go together, as one
`search_many` call (one batched query embedding, one batch of Qdrant queries). A search
that finds none running starts at once, so a lone request waits for nothing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from retrieval.errors import DomainNotFoundError, IncompatibleIndexError, RetrievalError
from retrieval.results import Hit, IndexReport
from retrieval.settings import SearchMode
from serving.errors import APIError
from serving.jobs import JobCancelledError
from serving.metrics import Metrics


def retrieval_api_error(err: Exception, param: str = "domain") -> APIError:
    """The HTTP answer to a failed search: 404 no index, 409 an index built another way,
    400 a bad query, 503 the store or model unavailable."""
    if isinstance(err, DomainNotFoundError):
        return APIError(404, str(err), param=param, code="index_not_found")
    if isinstance(err, IncompatibleIndexError):
        return APIError(409, str(err), param=param, code="incompatible_index")
    if isinstance(err, ValueError):
        return APIError(400, str(err), code="invalid_search")
    if isinstance(err, RetrievalError):
        return APIError(503, f"retrieval failed: {err}", code="retrieval_unavailable")
    raise err


_BatchKey = tuple[str, int, SearchMode]


class SearchService:
    def __init__(self, retriever: Any, metrics: Metrics) -> None:
        self.retriever = retriever
        self._metrics = metrics
        self._waiting: dict[_BatchKey, list[tuple[str, asyncio.Future[list[Hit]]]]] = {}
        self._running: set[_BatchKey] = set()
        self._tasks: set[asyncio.Task] = set()  # held: the loop keeps only weak references

    async def search(
        self, domain: str, query: str, k: int, mode: SearchMode, *, label: str
    ) -> list[Hit]:
        """The top-k hits of `domain`'s index; DomainNotFoundError when it has none.

        `label` is the domain's metric label (`ServerContext.domain_label`), never a name
        taken from the request unchecked.
        """
        started = time.perf_counter()
        key = (domain, k, mode)
        answer: asyncio.Future[list[Hit]] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append((query, answer))
        if key not in self._running:
            self._running.add(key)
            task = asyncio.get_running_loop().create_task(self._run_batches(key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            return await answer
        finally:
            self._metrics.retrieval_seconds.labels(label).observe(time.perf_counter() - started)

    async def _run_batches(self, key: _BatchKey) -> None:
        """Run the searches waiting under `key`, one batch at a time, until none wait."""
        domain, k, mode = key
        try:
            while batch := self._waiting.pop(key, []):
                queries = [query for query, _ in batch]
                try:
                    results = await asyncio.to_thread(
                        self.retriever.search_many, domain, queries, k=k, mode=mode
                    )
                except Exception as err:  # noqa: BLE001 - passed on to every search of the batch
                    for _, answer in batch:
                        if not answer.done():  # done: its request was cancelled meanwhile
                            answer.set_exception(err)
                    continue
                for (_, answer), hits in zip(batch, results, strict=True):
                    if not answer.done():
                        answer.set_result(hits)
        finally:
            self._running.discard(key)

    async def has_index(self, domain: str) -> bool:
        return await asyncio.to_thread(self.retriever.has_domain, domain)

    async def reindex(
        self, domain: str, folder: Path, cancel: threading.Event | None = None
    ) -> IndexReport:
        """Build a new index of `folder` aside and switch `domain` to it when complete.

        Setting `cancel` stops the run at its next step; the previous index keeps serving.
        """

        def progress(stage: str, done: int, total: int) -> None:
            if cancel is not None and cancel.is_set():
                raise JobCancelledError(f"re-index of {domain!r} stopped at {stage} {done}/{total}")

        return await asyncio.to_thread(
            self.retriever.index, domain, folder, rebuild=True, progress=progress
        )

    async def delete(self, domain: str) -> None:
        try:
            await asyncio.to_thread(self.retriever.delete, domain)
        except DomainNotFoundError:
            pass
