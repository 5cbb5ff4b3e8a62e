"""The engine protocol: what the server needs from a generation backend, and nothing more.

The server renders prompts itself (chat template + retrieved context) and hands the engine
token ids, so every engine sees exactly the tokens training saw. Adapters are registered in
the engine as immutable versions (`LoadedAdapter`); replacing an adapter means registering
a new version, routing new requests to it, and removing the old one once idle.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length"]


class EngineError(RuntimeError):
    """The engine could not start, load an adapter, or generate."""


class AdapterCapacityError(EngineError):
    """No free adapter slot: unload an adapter first (or raise `serving.max_adapters`)."""


@dataclass(frozen=True)
class SamplingOptions:
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class LoadedAdapter:
    """One version of a named adapter, as registered in an engine."""

    name: str
    version: int
    path: Path
    engine_id: int  # unique for the server's lifetime (vLLM's lora_int_id); never reused

    @property
    def key(self) -> str:
        return f"{self.name}@v{self.version}"


@dataclass
class GenerationChunk:
    """A piece of a generation: the new text and tokens since the previous chunk."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0  # cumulative, so the last chunk holds the total


@runtime_checkable
class Engine(Protocol):
    """A generation backend. All methods are safe to call concurrently from one event loop."""

    name: str
    max_adapters: int  # adapters that may be registered at once

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...

    def stream(
        self,
        prompt_token_ids: list[int],
        options: SamplingOptions,
        adapter: LoadedAdapter | None,
        request_id: str,
    ) -> AsyncIterator[GenerationChunk]: ...

    async def generate(
        self,
        prompt_token_ids: list[int],
        options: SamplingOptions,
        adapter: LoadedAdapter | None,
        request_id: str,
    ) -> GenerationChunk:
        """The whole generation as one chunk (text and token ids of the full completion)."""
        ...

    async def add_adapter(self, adapter: LoadedAdapter) -> None: ...

    async def remove_adapter(self, adapter: LoadedAdapter) -> None: ...

    def adapters(self) -> list[LoadedAdapter]: ...
