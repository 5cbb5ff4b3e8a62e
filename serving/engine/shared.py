"""What both engines implement alike on top of their own `stream`: the whole generation as
one chunk, and adding and removing adapters through the `AdapterTable`, so that the two
cannot drift apart on when an adapter serves, stops serving and leaves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import NamedTuple

from serving.engine.adapter_table import AdapterTable
from serving.engine.base import EngineError, GenerationChunk, LoadedAdapter, SamplingOptions
from serving.engine.requests import collect
from serving.engine.settings import EngineSettings


class EngineRequest(NamedTuple):
    """`Engine.stream`'s arguments, as one value for the engines' `_chunks`."""

    prompt_token_ids: list[int]
    options: SamplingOptions
    adapter: LoadedAdapter | None
    request_id: str


class TableEngine:
    """An engine's shared half. Subclasses set `label` (for messages), and
    implement `_chunks` (the generation), `_check_running`, and `_attach` and `_detach` (an
    adapter's weights into and out of the model)."""

    label = "the engine"

    def __init__(self, model_path: str | Path, settings: EngineSettings) -> None:
        self.model_path = Path(model_path)
        self.settings = settings
        self.max_adapters = settings.max_adapters
        self._table = AdapterTable(settings.max_adapters, settings.max_lora_rank)

    def stream(
        self,
        prompt_token_ids: list[int],
        options: SamplingOptions,
        adapter: LoadedAdapter | None,
        request_id: str,
    ) -> AsyncIterator[GenerationChunk]:
        """Generate from token ids, yielding the new text and tokens as they come.

        Errors (not started, unknown adapter, bad request) raise at the first iteration;
        closing the iterator early stops the generation.
        """
        return self._chunks(EngineRequest(prompt_token_ids, options, adapter, request_id))

    def _chunks(self, request: EngineRequest) -> AsyncIterator[GenerationChunk]:
        raise NotImplementedError

    def _check_running(self) -> None:
        """Raise `EngineError` when the engine is not started (or has died)."""
        raise NotImplementedError

    async def _attach(self, adapter: LoadedAdapter) -> None:
        raise NotImplementedError

    async def _detach(self, adapter: LoadedAdapter) -> None:
        raise NotImplementedError

    async def generate(
        self,
        prompt_token_ids: list[int],
        options: SamplingOptions,
        adapter: LoadedAdapter | None,
        request_id: str,
    ) -> GenerationChunk:
        """The whole generation as one chunk (text and token ids of the full completion)."""
        return await collect(self.stream(prompt_token_ids, options, adapter, request_id))

    async def add_adapter(self, adapter: LoadedAdapter) -> None:
        """Load an adapter's weights now, so a bad adapter fails here and not at first use."""
        self._check_running()
        self._table.reserve(adapter)
        try:
            await self._attach(adapter)
        except Exception as err:
            self._table.discard(adapter)
            raise EngineError(
                f"{self.label} could not load adapter {adapter.key} from {adapter.path}: {err}"
            ) from err
        self._table.activate(adapter)

    async def remove_adapter(self, adapter: LoadedAdapter) -> None:
        """Stop routing requests to `adapter`, wait for its running requests, unload it."""
        self._check_running()
        await self._table.retire(adapter)
        try:
            await self._detach(adapter)
        except Exception as err:
            # Still counted against capacity: the engine may hold it. Removing again retries.
            raise EngineError(f"{self.label} could not unload adapter {adapter.key}: {err}") from err
        self._table.discard(adapter)

    def adapters(self) -> list[LoadedAdapter]:
        """Adapters ready to serve requests (not those being added or removed)."""
        return self._table.ready()
