"""AdapterRegistry: leases, atomic replacement, draining and capacity, on a scripted engine."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from serving.adapters import AdapterRegistry
from serving.engine.base import AdapterCapacityError, LoadedAdapter, SamplingOptions
from serving.metrics import Metrics
from tests.serving.fakes import FakeEngine


def _adapter_dir(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text("{}")
    return folder


async def _serving_v1(
    tmp_path: Path, max_adapters: int | None = None, metrics: Metrics | None = None, **options
) -> tuple[FakeEngine, AdapterRegistry]:
    """A fake engine and a registry serving version 1 of `acme`."""
    engine = FakeEngine() if max_adapters is None else FakeEngine(max_adapters=max_adapters)
    registry = AdapterRegistry(engine, metrics or Metrics(), **options)
    await registry.put("acme", 1, _adapter_dir(tmp_path, "v1"))
    return engine, registry


async def _generate(engine: FakeEngine, registry: AdapterRegistry, name: str | None) -> str:
    lease = registry.lease(name)
    assert lease is not None
    try:
        result = await engine.generate([1, 2], SamplingOptions(), lease.adapter, "r")
        return result.text
    finally:
        lease.release()


def test_replace_keeps_running_requests_on_their_version(tmp_path: Path) -> None:
    async def scenario() -> None:
        engine, registry = await _serving_v1(tmp_path, max_adapters=2)
        engine.hold = asyncio.Event()
        running = asyncio.create_task(_generate(engine, registry, "acme"))
        while engine.started_requests < 1:
            await asyncio.sleep(0)
        old = await registry.put("acme", 2, _adapter_dir(tmp_path, "v2"))
        assert old is not None and old.version == 1
        # The old version waits for its request: still in the engine, and draining.
        assert [a.key for a in engine.adapters()] == ["acme@v1", "acme@v2"]
        assert [a.version for a in registry.draining()] == [1]
        engine.hold.set()
        assert await running == "acme@v1 says hello"
        assert await _generate(engine, registry, "acme") == "acme@v2 says hello"
        await asyncio.sleep(0.01)
        assert [a.key for a in engine.adapters()] == ["acme@v2"]
        assert engine.removed == ["acme@v1"]
        assert registry.draining() == []
        await registry.close()
        assert engine.adapters() == []

    asyncio.run(scenario())


def test_unload_lets_running_requests_finish(tmp_path: Path) -> None:
    async def scenario() -> None:
        engine, registry = await _serving_v1(tmp_path)
        engine.hold = asyncio.Event()
        running = asyncio.create_task(_generate(engine, registry, "acme"))
        while engine.started_requests < 1:
            await asyncio.sleep(0)
        await registry.drop("acme")
        assert registry.lease("acme") is None  # new requests no longer find it
        assert [a.key for a in engine.adapters()] == ["acme@v1"]  # but it still serves
        engine.hold.set()
        assert await running == "acme@v1 says hello"
        await asyncio.sleep(0.01)
        assert engine.adapters() == []

    asyncio.run(scenario())


def test_load_waits_for_a_draining_version_when_full(tmp_path: Path) -> None:
    async def scenario() -> None:
        engine = FakeEngine(max_adapters=2)
        metrics = Metrics()
        registry = AdapterRegistry(engine, metrics, capacity_wait_s=5)
        await registry.put("acme", 1, _adapter_dir(tmp_path, "v1"))
        engine.hold = asyncio.Event()
        running = asyncio.create_task(_generate(engine, registry, "acme"))
        while engine.started_requests < 1:
            await asyncio.sleep(0)
        await registry.put("acme", 2, _adapter_dir(tmp_path, "v2"))  # slots: v1 (busy), v2
        third = asyncio.create_task(registry.put("acme", 3, _adapter_dir(tmp_path, "v3")))
        await asyncio.sleep(0.05)
        assert not third.done()  # waits for v1 to drain rather than failing
        engine.hold.set()
        await running
        await asyncio.wait_for(third, 5)
        assert registry.current("acme").version == 3
        await asyncio.sleep(0.01)
        assert [a.key for a in engine.adapters()] == ["acme@v3"]
        # The wait is on /metrics: three loads, only the third waited (for at least 50 ms).
        sample = metrics.registry.get_sample_value
        assert sample("lorag_adapter_slot_wait_seconds_count") == 3
        assert sample("lorag_adapter_slot_wait_seconds_bucket", {"le": "0.01"}) == 2
        assert sample("lorag_adapter_slot_wait_seconds_sum") >= 0.05

    asyncio.run(scenario())


def test_load_waits_for_a_version_being_removed(tmp_path: Path) -> None:
    """A slot is free only once the engine has removed the old version, not before."""

    async def scenario() -> None:
        engine = FakeEngine(max_adapters=2)
        registry = AdapterRegistry(engine, Metrics(), capacity_wait_s=5)
        engine.hold_removal = asyncio.Event()
        await registry.put("acme", 1, _adapter_dir(tmp_path, "v1"))
        await registry.put("acme", 2, _adapter_dir(tmp_path, "v2"))  # v1's removal starts
        await asyncio.sleep(0.01)
        third = asyncio.create_task(registry.put("acme", 3, _adapter_dir(tmp_path, "v3")))
        await asyncio.sleep(0.05)
        assert not third.done()
        engine.hold_removal.set()
        await asyncio.wait_for(third, 5)
        await asyncio.sleep(0.01)
        assert [a.key for a in engine.adapters()] == ["acme@v3"]

    asyncio.run(scenario())


def test_load_fails_at_once_when_full_with_nothing_draining(tmp_path: Path) -> None:
    async def scenario() -> None:
        _, registry = await _serving_v1(tmp_path, max_adapters=1)
        with pytest.raises(AdapterCapacityError, match="slots are in use"):
            await registry.put("other", 1, _adapter_dir(tmp_path, "o1"))
        assert registry.names() == ["acme"]

    asyncio.run(scenario())


def test_failed_load_leaves_the_current_version(tmp_path: Path) -> None:
    async def scenario() -> None:
        engine, registry = await _serving_v1(tmp_path)
        with pytest.raises(Exception, match="not an adapter"):
            await registry.put("acme", 2, tmp_path / "missing")
        assert registry.current("acme").version == 1
        assert await _generate(engine, registry, "acme") == "acme@v1 says hello"

    asyncio.run(scenario())


def test_engine_ids_are_never_reused(tmp_path: Path) -> None:
    async def scenario() -> None:
        engine = FakeEngine()
        registry = AdapterRegistry(engine, Metrics())
        ids = []
        for version in (1, 2, 3):
            await registry.put("acme", version, _adapter_dir(tmp_path, f"v{version}"))
            ids.append(registry.current("acme").engine_id)
        assert len(set(ids)) == 3
        # Another registry on the same engine (a second app) starts above the ids in use.
        await engine.add_adapter(LoadedAdapter("left", 1, _adapter_dir(tmp_path, "l"), 40))
        again = AdapterRegistry(engine, Metrics())
        await again.put("beta", 1, _adapter_dir(tmp_path, "b1"))
        assert again.current("beta").engine_id == 41

    asyncio.run(scenario())
