"""A scripted engine for unit tests of routing, limits and adapter swaps (no model runs).

It answers `<adapter key or "base"> says hello`, one word per chunk, so a test can tell
which adapter version served a request; `hold` makes requests wait mid-generation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from serving.engine.base import (
    AdapterCapacityError,
    EngineError,
    GenerationChunk,
    LoadedAdapter,
    SamplingOptions,
)
from serving.engine.shared import EngineRequest, TableEngine


class FakeEngine(TableEngine):
    """`generate` is the real engines' (over `stream`); the adapters are a plain dict."""

    name = "fake"

    def __init__(self, max_adapters: int = 4) -> None:
        self.max_adapters = max_adapters
        self._adapters: dict[int, LoadedAdapter] = {}
        self.hold: asyncio.Event | None = None  # when set: requests wait for it mid-way
        self.hold_removal: asyncio.Event | None = None  # when set: removals wait for it
        self.started_requests = 0
        self.prompts: list[list[int]] = []
        self.options: list[SamplingOptions] = []
        self.removed: list[str] = []
        self.cancelled: list[str] = []  # request ids whose generation was cancelled (aborted)

    async def start(self) -> None:
        pass

    async def shutdown(self) -> None:
        self._adapters.clear()

    async def _chunks(self, request: EngineRequest) -> AsyncIterator[GenerationChunk]:
        prompt_token_ids, options, adapter, request_id = request
        if adapter is not None and self._adapters.get(adapter.engine_id) != adapter:
            raise EngineError(f"adapter {adapter.key} is not registered")
        self.started_requests += 1
        self.prompts.append(list(prompt_token_ids))
        self.options.append(options)
        words = [adapter.key if adapter else "base", "says", "hello"][: options.max_tokens]
        for number, word in enumerate(words, start=1):
            if number == 2 and self.hold is not None:
                try:
                    await self.hold.wait()
                except asyncio.CancelledError:
                    self.cancelled.append(request_id)
                    raise
            last = number == len(words)
            yield GenerationChunk(
                text=word if number == 1 else " " + word,
                token_ids=[number],
                finish_reason=("stop" if len(words) == 3 else "length") if last else None,
                prompt_tokens=len(prompt_token_ids),
                completion_tokens=number,
            )

    async def add_adapter(self, adapter: LoadedAdapter) -> None:
        if len(self._adapters) >= self.max_adapters:
            raise AdapterCapacityError("no free slot")
        if not (Path(adapter.path) / "adapter_config.json").is_file():
            raise EngineError(f"{adapter.path}: not an adapter")
        if any(a.engine_id == adapter.engine_id for a in self._adapters.values()):
            raise EngineError("engine id reused")
        await asyncio.sleep(0)
        self._adapters[adapter.engine_id] = adapter

    async def remove_adapter(self, adapter: LoadedAdapter) -> None:
        if self.hold_removal is not None:
            await self.hold_removal.wait()
        self._adapters.pop(adapter.engine_id)
        self.removed.append(adapter.key)

    def adapters(self) -> list[LoadedAdapter]:
        return sorted(self._adapters.values(), key=lambda a: a.engine_id)
