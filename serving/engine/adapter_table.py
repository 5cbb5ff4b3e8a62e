"""The adapters an engine holds, their capacity, and the requests running on each.

Both engines keep one `AdapterTable` and consult it on every request, so they agree on
what "registered" means: an adapter can serve requests once its load has succeeded, stops
taking new requests as soon as its removal starts, and leaves the engine only after the
requests already running on it have finished.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from serving.engine.base import AdapterCapacityError, EngineError, LoadedAdapter
from serving.engine.errors import UnknownAdapterError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def adapter_rank(path: Path) -> int:
    """The largest LoRA rank in a PEFT adapter folder, with errors that name the file."""
    config_path = Path(path) / ADAPTER_CONFIG
    if not config_path.is_file():
        raise EngineError(f"{config_path}: not a PEFT adapter folder (no {ADAPTER_CONFIG})")
    if not any((Path(path) / name).is_file() for name in ADAPTER_WEIGHTS):
        raise EngineError(f"{path}: no adapter weights ({' or '.join(ADAPTER_WEIGHTS)})")
    try:
        config = json.loads(config_path.read_text())
        ranks = [int(config["r"]), *(int(r) for r in (config.get("rank_pattern") or {}).values())]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise EngineError(f"{config_path}: unreadable LoRA config: {err}") from err
    if config.get("peft_type", "LORA") != "LORA":
        raise EngineError(f"{config_path}: peft_type {config.get('peft_type')!r} is not LORA")
    return max(ranks)


@dataclass
class _Entry:
    adapter: LoadedAdapter
    state: Literal["loading", "ready", "removing"] = "loading"
    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    remover_active: bool = False

    def __post_init__(self) -> None:
        self.idle.set()


class AdapterTable:
    """Registered adapter versions by key. Use from one event loop only."""

    def __init__(self, capacity: int, max_rank: int) -> None:
        self.capacity = capacity
        self.max_rank = max_rank
        self._entries: dict[str, _Entry] = {}

    def reserve(self, adapter: LoadedAdapter) -> None:
        """Claim a slot for `adapter` before loading it; raises if it cannot be added."""
        if adapter.engine_id < 1:
            raise EngineError(f"adapter {adapter.key}: engine_id must be >= 1")
        if adapter.key in self._entries:
            raise EngineError(f"adapter {adapter.key} is already registered in the engine")
        taken = {entry.adapter.engine_id: key for key, entry in self._entries.items()}
        if adapter.engine_id in taken:
            raise EngineError(
                f"adapter {adapter.key}: engine_id {adapter.engine_id} is already used by "
                f"{taken[adapter.engine_id]}; engine ids are never reused"
            )
        if len(self._entries) >= self.capacity:
            held = ", ".join(sorted(self._entries))
            raise AdapterCapacityError(
                f"cannot add adapter {adapter.key}: the engine holds {len(self._entries)} of "
                f"{self.capacity} adapters ({held}); unload one first or raise "
                "serving.engine.max_adapters"
            )
        rank = adapter_rank(adapter.path)
        if rank > self.max_rank:
            raise EngineError(
                f"adapter {adapter.key} at {adapter.path} has LoRA rank {rank}, above "
                f"serving.engine.max_lora_rank={self.max_rank}; raise that setting"
            )
        self._entries[adapter.key] = _Entry(adapter)

    def activate(self, adapter: LoadedAdapter) -> None:
        """Mark a reserved adapter as loaded: requests may use it from now on."""
        self._entries[adapter.key].state = "ready"

    def discard(self, adapter: LoadedAdapter) -> None:
        """Forget an adapter whose load failed or whose removal is complete."""
        self._entries.pop(adapter.key, None)

    async def retire(self, adapter: LoadedAdapter) -> None:
        """Refuse new requests on `adapter`, then wait until its running requests are done."""
        entry = self._entries.get(adapter.key)
        if entry is None or entry.adapter != adapter or entry.state == "loading":
            raise UnknownAdapterError(f"adapter {adapter.key} is not registered in the engine")
        if entry.remover_active:
            raise EngineError(f"adapter {adapter.key} is already being removed")
        entry.state = "removing"
        entry.remover_active = True
        try:
            await entry.idle.wait()
        finally:
            entry.remover_active = False

    @contextmanager
    def use(self, adapter: LoadedAdapter | None) -> Iterator[None]:
        """Count a request on `adapter` (None: the base model) while it runs."""
        if adapter is None:
            yield
            return
        entry = self._entries.get(adapter.key)
        if entry is None or entry.adapter != adapter or entry.state != "ready":
            state = "being removed" if entry and entry.state == "removing" else "not registered"
            raise UnknownAdapterError(
                f"adapter {adapter.key} is {state} in the engine; add it before use"
            )
        entry.in_flight += 1
        entry.idle.clear()
        try:
            yield
        finally:
            entry.in_flight -= 1
            if entry.in_flight == 0:
                entry.idle.set()

    def ready(self) -> list[LoadedAdapter]:
        """Adapters that can serve requests now, oldest engine id first."""
        entries = [e.adapter for e in self._entries.values() if e.state == "ready"]
        return sorted(entries, key=lambda adapter: adapter.engine_id)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
