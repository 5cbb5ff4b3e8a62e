"""The server's search service: concurrent searches of a domain share one batched call."""

from __future__ import annotations

import asyncio
import threading

import pytest

from serving.metrics import Metrics
from serving.search import SearchService


class GatedRetriever:
    """Records each `search_many` call; every call waits until the test opens the gate."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], int, str]] = []
        self.gate = threading.Event()

    def search_many(self, domain: str, queries: list[str], *, k: int, mode: str):
        self.calls.append((domain, list(queries), k, mode))
        self.gate.wait(timeout=10)
        if "boom" in queries:
            raise ValueError("a search query must be non-empty text")
        return [[f"{domain}:{query}:{n}" for n in range(k)] for query in queries]


async def _until(condition, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_searches_that_arrive_during_a_search_go_together_and_each_gets_its_own_hits():
    async def scenario():
        retriever = GatedRetriever()
        service = SearchService(retriever, Metrics())
        first = asyncio.create_task(service.search("shop", "q0", 2, "hybrid", label="shop"))
        await _until(lambda: len(retriever.calls) == 1)  # the lone search started at once
        rest = [
            asyncio.create_task(service.search("shop", f"q{n}", 2, "hybrid", label="shop"))
            for n in range(1, 5)
        ]
        other = asyncio.create_task(service.search("docs", "x", 2, "hybrid", label="docs"))
        await _until(lambda: len(retriever.calls) == 2)  # another domain does not wait
        retriever.gate.set()
        results = await asyncio.gather(first, *rest, other)
        return retriever.calls, results

    calls, results = asyncio.run(scenario())
    assert calls[0] == ("shop", ["q0"], 2, "hybrid")
    assert calls[1] == ("docs", ["x"], 2, "hybrid")
    assert calls[2] == ("shop", ["q1", "q2", "q3", "q4"], 2, "hybrid")
    assert len(calls) == 3
    assert results[:5] == [[f"shop:q{n}:0", f"shop:q{n}:1"] for n in range(5)]
    assert results[5] == ["docs:x:0", "docs:x:1"]


def test_an_error_reaches_every_search_of_its_batch_and_a_cancelled_search_harms_none():
    async def scenario():
        retriever = GatedRetriever()
        service = SearchService(retriever, Metrics())
        first = asyncio.create_task(service.search("shop", "q0", 1, "dense", label="shop"))
        await _until(lambda: len(retriever.calls) == 1)
        doomed = [
            asyncio.create_task(service.search("shop", q, 1, "dense", label="shop"))
            for q in ("boom", "q2")
        ]
        gone = asyncio.create_task(service.search("shop", "q3", 1, "dense", label="shop"))
        await asyncio.sleep(0.01)
        gone.cancel()  # its client went away while it waited
        retriever.gate.set()
        assert await first == ["shop:q0:0"]
        for task in doomed:
            with pytest.raises(ValueError, match="non-empty"):
                await task
        with pytest.raises(asyncio.CancelledError):
            await gone
        # The service is not stuck: the next search runs.
        return await service.search("shop", "q4", 1, "dense", label="shop")

    assert asyncio.run(scenario()) == ["shop:q4:0"]
