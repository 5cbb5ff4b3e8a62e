"""The server's use of `retrieval.Retriever`: searches and re-index runs off the event loop.

The Retriever's calls block (embedding, Qdrant), so they run in worker threads; one
Retriever serves the whole process (the embedded index allows one process per folder).
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


class SearchService:
    def __init__(self, retriever: Any, metrics: Metrics) -> None:
        self.retriever = retriever
        self._metrics = metrics

    async def search(
        self, domain: str, query: str, k: int, mode: SearchMode, *, label: str
    ) -> list[Hit]:
        """The top-k hits of `domain`'s index; DomainNotFoundError when it has none.

        `label` is the domain's metric label (`ServerContext.domain_label`), never a name
        taken from the request unchecked.
        """
        started = time.perf_counter()
        try:
            return await asyncio.to_thread(self.retriever.search, domain, query, k=k, mode=mode)
        finally:
            self._metrics.retrieval_seconds.labels(label).observe(time.perf_counter() - started)

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
