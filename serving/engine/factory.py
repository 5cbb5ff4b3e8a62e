"""Pick the engine the configuration names, importing vLLM only when it is the one."""

from __future__ import annotations

from pathlib import Path

from serving.engine.base import Engine, EngineError
from serving.engine.settings import EngineSettings


class EngineUnavailableError(EngineError):
    """The configured engine's library is not installed."""


def create_engine(settings: EngineSettings, model_path: str | Path) -> Engine:
    """A not-yet-started engine for the base model in `model_path` (call `await start()`)."""
    if settings.kind == "transformers":
        from serving.engine.hf_engine import TransformersEngine

        return TransformersEngine(model_path, settings)
    try:
        from serving.engine.vllm_engine import VLLMEngine
    except ImportError as err:
        raise EngineUnavailableError(
            f"serving.engine.kind is 'vllm' but vLLM cannot be imported ({err}). Install it "
            "with `pip install lorag[cpu]` (no GPU) or `pip install lorag[gpu]` (CUDA), or "
            "set `serving.engine.kind: transformers` to serve with transformers + PEFT"
        ) from err
    return VLLMEngine(model_path, settings)
