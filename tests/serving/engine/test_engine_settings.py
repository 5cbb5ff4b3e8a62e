"""Engine settings and the factory (without starting vLLM)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from serving.engine import EngineUnavailableError, create_engine
from serving.engine.hf_engine import TransformersEngine
from serving.engine.settings import EngineSettings


def test_defaults() -> None:
    settings = EngineSettings()
    assert (settings.kind, settings.max_adapters, settings.max_lora_rank) == ("vllm", 4, 16)
    assert (settings.dtype, settings.kv_cache_bytes) == ("auto", 1 << 30)


def test_bad_values_are_named() -> None:
    with pytest.raises(ValidationError, match="max_lora_rank"):
        EngineSettings(max_lora_rank=12)
    with pytest.raises(ValidationError, match="bogus"):
        EngineSettings(bogus=1)
    with pytest.raises(ValidationError, match="max_adapters"):
        EngineSettings(max_adapters=0)
    with pytest.raises(ValidationError, match="kind"):
        EngineSettings(kind="llama.cpp")


def test_environment_style_strings_are_accepted() -> None:
    settings = EngineSettings.model_validate({"max_lora_rank": "32", "kv_cache_gib": "0.5"})
    assert (settings.max_lora_rank, settings.kv_cache_bytes) == (32, 1 << 29)


def test_factory_builds_the_transformers_engine(tmp_path: Path) -> None:
    engine = create_engine(EngineSettings(kind="transformers", max_adapters=3), tmp_path)
    assert isinstance(engine, TransformersEngine)
    assert (engine.max_adapters, engine.model_path) == (3, tmp_path)


def test_factory_explains_a_missing_vllm(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "serving.engine.vllm_engine", None)  # import fails
    with pytest.raises(EngineUnavailableError) as err:
        create_engine(EngineSettings(kind="vllm"), tmp_path)
    message = str(err.value)
    assert "pip install lorag[cpu]" in message and "lorag[gpu]" in message
    assert "serving.engine.kind: transformers" in message
