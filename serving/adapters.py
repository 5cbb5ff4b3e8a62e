"""Named adapters and their versions in the engine, swapped atomically under live traffic.

A request leases the current version of a name for its whole life. Loading a name again
registers a new version in the engine first and then points the name at it, in one step
of the event loop: requests already running keep the version they leased, new ones get
the new version. A replaced (or unloaded) version leaves the engine when its last lease
ends. No request ever sees a name without a version in between.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from contracts.manifest import AdapterCompatibilityError, AdapterManifest
from retrieval.prompt import PROMPT_FORMAT
from serving.engine.base import AdapterCapacityError, Engine, LoadedAdapter
from serving.metrics import Metrics
from serving.paths import UnsafePathError, resolve_under

log = logging.getLogger("lorag.serving")

PEFT_CONFIG_FILE = "adapter_config.json"


class AdapterPathError(ValueError):
    """An adapter path is outside the adapters root, missing, or not an adapter folder."""


def resolve_adapter_dir(adapters_root: Path, relative: str) -> Path:
    """The adapter folder `relative` names under `adapters_root`, checked to stay inside it."""
    try:
        folder = resolve_under(adapters_root, relative)
    except UnsafePathError as err:
        raise AdapterPathError(f"adapter path {err}") from err
    except FileNotFoundError as err:
        raise AdapterPathError(
            f"adapter path {relative!r}: no such folder under the adapters root {adapters_root}"
        ) from err
    if not folder.is_dir():
        raise AdapterPathError(f"adapter path {relative!r}: not a folder")
    if not (folder / PEFT_CONFIG_FILE).is_file():
        raise AdapterPathError(
            f"adapter path {relative!r}: no {PEFT_CONFIG_FILE}; not a PEFT adapter folder"
        )
    return folder


def check_manifest(
    folder: Path, base_fingerprint: str, base_model: str, prompt_format: str = PROMPT_FORMAT
) -> AdapterManifest:
    """Refuse an adapter trained for another base model or another prompt format."""
    manifest = AdapterManifest.load(folder)
    manifest.check_base(base_fingerprint, base_model)
    if manifest.prompt_format != prompt_format:
        raise AdapterCompatibilityError(
            f"adapter {manifest.name!r} was trained with prompt format "
            f"{manifest.prompt_format!r}, but this server renders {prompt_format!r} "
            "(model.prompt_layout); retrain it, or serve with the layout it was trained on"
        )
    return manifest


@dataclass
class Lease:
    """A request's hold on one adapter version (or on the base model: `adapter` is None)."""

    adapter: LoadedAdapter | None
    _registry: AdapterRegistry | None = field(default=None, repr=False)

    def release(self) -> None:
        """End the lease (idempotent)."""
        registry, self._registry = self._registry, None
        if registry is not None and self.adapter is not None:
            registry._release(self.adapter)


class AdapterRegistry:
    """Which version of each name is current, and how many requests hold each version."""

    def __init__(self, engine: Engine, metrics: Metrics, capacity_wait_s: float = 30.0) -> None:
        self._engine = engine
        self._metrics = metrics
        self._capacity_wait_s = capacity_wait_s
        self._current: dict[str, LoadedAdapter] = {}
        self._leases: dict[int, int] = {}  # engine_id -> requests running on it
        self._retired: dict[int, LoadedAdapter] = {}  # replaced/unloaded, not yet removed
        self._removing: set[int] = set()  # retired versions whose removal has started
        self._registered: dict[int, LoadedAdapter] = {}  # in the engine (or being added)
        self._changed = asyncio.Condition()
        self._loading = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._next_id = 1 + max((a.engine_id for a in engine.adapters()), default=0)

    # Requests ----------------------------------------------------------------------------

    def current(self, name: str) -> LoadedAdapter | None:
        return self._current.get(name)

    def names(self) -> list[str]:
        return sorted(self._current)

    def lease(self, name: str | None) -> Lease | None:
        """Hold the current version of `name` (None: the base model); None if not loaded."""
        if name is None:
            return Lease(None)
        adapter = self._current.get(name)
        if adapter is None:
            return None
        self._leases[adapter.engine_id] = self._leases.get(adapter.engine_id, 0) + 1
        return Lease(adapter, self)

    def in_flight(self, adapter: LoadedAdapter) -> int:
        return self._leases.get(adapter.engine_id, 0)

    def draining(self) -> list[LoadedAdapter]:
        return sorted(self._retired.values(), key=lambda a: a.engine_id)

    def _release(self, adapter: LoadedAdapter) -> None:
        left = self._leases.get(adapter.engine_id, 0) - 1
        if left > 0:
            self._leases[adapter.engine_id] = left
            return
        self._leases.pop(adapter.engine_id, None)
        if adapter.engine_id in self._retired:
            self._spawn(self._remove(adapter))

    # Admin -------------------------------------------------------------------------------

    async def put(self, name: str, version: int, path: Path) -> LoadedAdapter | None:
        """Serve `path` as `version` of `name`; returns the version it replaced, if any."""
        async with self._loading:  # one load at a time, so slots are counted right
            waiting = time.perf_counter()
            await self._wait_for_slot()
            self._metrics.adapter_slot_wait_seconds.observe(time.perf_counter() - waiting)
            adapter = LoadedAdapter(
                name=name, version=version, path=Path(path), engine_id=self._take_id()
            )
            self._registered[adapter.engine_id] = adapter
            started = time.perf_counter()
            try:
                await self._engine.add_adapter(adapter)
            except BaseException:
                self._registered.pop(adapter.engine_id, None)
                raise
        self._metrics.adapter_load_seconds.observe(time.perf_counter() - started)
        self._metrics.adapter_loads.labels(name).inc()
        # The swap: one assignment, with no await between lookup and update.
        old = self._current.get(name)
        self._current[name] = adapter
        self._metrics.adapters_loaded.set(len(self._registered))
        if old is not None:
            self._metrics.adapter_swaps.labels(name).inc()
            self._retire(old)
        log.info("adapter %s loaded from %s (engine id %d)", adapter.key, path, adapter.engine_id)
        return old

    async def drop(self, name: str) -> LoadedAdapter | None:
        """Stop routing to `name`; its version leaves the engine when its requests end."""
        old = self._current.pop(name, None)
        if old is not None:
            self._retire(old)
        return old

    async def close(self) -> None:
        """Remove every version from the engine (at shutdown, after traffic stopped)."""
        for name in list(self._current):
            await self.drop(name)
        for adapter in list(self._retired.values()):
            self._leases.pop(adapter.engine_id, None)
            await self._remove(adapter)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # Internals ---------------------------------------------------------------------------

    def _take_id(self) -> int:
        in_engine = max((a.engine_id for a in self._engine.adapters()), default=0)
        engine_id = max(self._next_id, in_engine + 1)
        self._next_id = engine_id + 1
        return engine_id

    def _retire(self, adapter: LoadedAdapter) -> None:
        self._retired[adapter.engine_id] = adapter
        if self._leases.get(adapter.engine_id, 0) == 0:
            self._spawn(self._remove(adapter))

    async def _remove(self, adapter: LoadedAdapter) -> None:
        if adapter.engine_id in self._removing or adapter.engine_id not in self._retired:
            return  # already being removed, or gone
        self._removing.add(adapter.engine_id)
        try:
            await self._engine.remove_adapter(adapter)
            self._metrics.adapter_unloads.labels(adapter.name).inc()
            log.info("adapter %s removed from the engine", adapter.key)
        except Exception:
            log.exception("could not remove adapter %s from the engine", adapter.key)
        finally:
            # Until here the version still holds its slot: a load waiting for one sees it.
            self._removing.discard(adapter.engine_id)
            self._retired.pop(adapter.engine_id, None)
            self._registered.pop(adapter.engine_id, None)
            self._metrics.adapters_loaded.set(len(self._registered))
            await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _wait_for_slot(self) -> None:
        """Wait (bounded) for a draining version to leave when every engine slot is taken."""

        def has_slot() -> bool:
            return len(self._registered) < self._engine.max_adapters

        if has_slot():
            return
        if not self._retired:
            raise AdapterCapacityError(
                f"all {self._engine.max_adapters} adapter slots are in use; unload an adapter "
                "first or raise serving.engine.max_adapters"
            )
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(has_slot), self._capacity_wait_s)
            except TimeoutError as err:
                raise AdapterCapacityError(
                    f"all {self._engine.max_adapters} adapter slots are in use and replaced "
                    f"versions did not drain within {self._capacity_wait_s:.0f}s"
                ) from err

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
