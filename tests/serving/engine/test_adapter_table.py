"""The adapter bookkeeping both engines share: capacity, rank, and draining on removal."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from serving.engine.adapter_table import AdapterTable, adapter_rank
from serving.engine.base import AdapterCapacityError, EngineError, LoadedAdapter
from serving.engine.errors import UnknownAdapterError


def fake_adapter_dir(root: Path, name: str, r: int = 8, **extra) -> Path:
    """An adapter folder with a config and a (never read) weights file."""
    path = root / name
    path.mkdir()
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": r, **extra}))
    (path / "adapter_model.safetensors").write_bytes(b"")
    return path


def loaded(path: Path, engine_id: int, version: int = 1) -> LoadedAdapter:
    return LoadedAdapter(name=path.name, version=version, path=path, engine_id=engine_id)


def test_rank_comes_from_the_peft_config(tmp_path: Path) -> None:
    assert adapter_rank(fake_adapter_dir(tmp_path, "plain", r=8)) == 8
    patterned = fake_adapter_dir(tmp_path, "patterned", r=8, rank_pattern={"q_proj": 32})
    assert adapter_rank(patterned) == 32
    with pytest.raises(EngineError, match="no adapter_config.json"):
        adapter_rank(tmp_path / "nothing")
    no_weights = fake_adapter_dir(tmp_path, "no-weights")
    (no_weights / "adapter_model.safetensors").unlink()
    with pytest.raises(EngineError, match="no adapter weights"):
        adapter_rank(no_weights)
    with pytest.raises(EngineError, match="is not LORA"):
        adapter_rank(fake_adapter_dir(tmp_path, "ia3", peft_type="IA3"))


def test_capacity_counts_adapters_being_loaded(tmp_path: Path) -> None:
    table = AdapterTable(capacity=2, max_rank=16)
    first = loaded(fake_adapter_dir(tmp_path, "a"), 1)
    table.reserve(first)  # still loading: not ready, but it holds a slot
    table.reserve(loaded(fake_adapter_dir(tmp_path, "b"), 2))
    assert table.ready() == []
    with pytest.raises(AdapterCapacityError, match="holds 2 of 2 adapters"):
        table.reserve(loaded(fake_adapter_dir(tmp_path, "c"), 3))
    table.discard(first)  # its load failed
    table.reserve(loaded(tmp_path / "c", 3))
    assert len(table) == 2


def test_refusals(tmp_path: Path) -> None:
    table = AdapterTable(capacity=4, max_rank=16)
    path = fake_adapter_dir(tmp_path, "a")
    table.reserve(loaded(path, 1))
    with pytest.raises(EngineError, match="already registered"):
        table.reserve(loaded(path, 2))
    with pytest.raises(EngineError, match="engine_id 1 is already used by a@v1"):
        table.reserve(loaded(path, 1, version=2))
    with pytest.raises(EngineError, match="engine_id must be >= 1"):
        table.reserve(loaded(path, 0, version=3))
    with pytest.raises(EngineError, match="rank 32, above serving.engine.max_lora_rank=16"):
        table.reserve(loaded(fake_adapter_dir(tmp_path, "wide", r=32), 5))
    not_loaded_yet = pytest.raises(UnknownAdapterError, match="a@v1 is not registered")
    with not_loaded_yet, table.use(loaded(path, 1)):
        pass


def test_removal_waits_for_running_requests(tmp_path: Path) -> None:
    async def scenario() -> None:
        table = AdapterTable(capacity=2, max_rank=16)
        adapter = loaded(fake_adapter_dir(tmp_path, "a"), 1)
        table.reserve(adapter)
        table.activate(adapter)
        entered, release = asyncio.Event(), asyncio.Event()

        async def request() -> None:
            with table.use(adapter):
                entered.set()
                await release.wait()

        running = asyncio.create_task(request())
        await entered.wait()
        removal = asyncio.create_task(table.retire(adapter))
        await asyncio.sleep(0)  # one loop step: the removal starts and blocks
        assert not removal.done()
        assert table.ready() == []
        with pytest.raises(UnknownAdapterError, match="being removed"), table.use(adapter):
            pass
        with pytest.raises(EngineError, match="already being removed"):
            await table.retire(adapter)
        release.set()
        await running
        await asyncio.wait_for(removal, timeout=5)
        table.discard(adapter)
        assert len(table) == 0
        with pytest.raises(UnknownAdapterError):
            await table.retire(adapter)

    asyncio.run(scenario())


def test_base_requests_need_no_adapter() -> None:
    table = AdapterTable(capacity=1, max_rank=16)
    with table.use(None):
        pass
