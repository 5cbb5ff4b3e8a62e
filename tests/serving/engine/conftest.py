"""Fixtures of the engine tests: a tiny Llama, random adapters, a PEFT reference, an event loop.

Engines are bound to the event loop they start on, and pytest-asyncio is not used here, so
one event loop runs in a thread for the whole session and tests hand it coroutines
(`loop.run(coro)`), with a bounded wait on each.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from serving.engine.base import GenerationChunk, SamplingOptions
from tests.support.adapters import make_random_adapter
from tests.support.loop import LoopThread
from tests.support.tiny_models import build_tiny_model

T = TypeVar("T")

ADAPTER_NAMES = ("alpha", "beta", "gamma", "delta")


@pytest.fixture(scope="session")
def loop() -> Iterator[LoopThread]:
    runner = LoopThread()
    yield runner
    runner.close()


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 2-layer tiny Llama (float32) with its trained tokenizer and chat template."""
    return build_tiny_model(tmp_path_factory.mktemp("engine-tiny") / "llama")


@pytest.fixture(scope="session")
def adapter_dirs(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Four random LoRA adapters (r=8, all linear layers) for the tiny Llama, by name."""
    root = tmp_path_factory.mktemp("engine-adapters")
    return {
        name: make_random_adapter(tiny_llama, root / name, seed=seed)
        for seed, name in enumerate(ADAPTER_NAMES, start=1)
    }


@pytest.fixture(scope="session")
def prompt_ids(tiny_llama: Path) -> list[int]:
    """A chat prompt rendered the way the server renders it (template + generation prompt)."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    messages = [{"role": "user", "content": "What is the refund policy for a red product?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


class PeftReference:
    """Greedy generations straight from transformers + PEFT, to compare the engines with."""

    def __init__(self, base_dir: Path, adapters: dict[str, Path]) -> None:
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
        first, *rest = adapters
        self.model = PeftModel.from_pretrained(base, adapters[first], adapter_name=first)
        for name in rest:
            self.model.load_adapter(adapters[name], adapter_name=name)
        self._cache: dict[tuple, list[int]] = {}

    def greedy(self, prompt: list[int], adapter: str | None, max_new_tokens: int) -> list[int]:
        """The completion's token ids (the stop token included, as the engines report it)."""
        key = (tuple(prompt), adapter, max_new_tokens)
        if key not in self._cache:
            inputs = torch.tensor([prompt])
            self.model.set_adapter(adapter or next(iter(self.model.peft_config)))
            with torch.inference_mode():
                if adapter is None:
                    with self.model.disable_adapter():
                        out = self.model.generate(
                            inputs, max_new_tokens=max_new_tokens, do_sample=False
                        )
                else:
                    out = self.model.generate(
                        inputs, max_new_tokens=max_new_tokens, do_sample=False
                    )
            self._cache[key] = out[0, len(prompt) :].tolist()
        return self._cache[key]


@pytest.fixture(scope="session")
def reference(tiny_llama: Path, adapter_dirs: dict[str, Path]) -> PeftReference:
    return PeftReference(tiny_llama, adapter_dirs)


@pytest.fixture
def clean(engine, loop) -> Iterator[None]:
    """Every test starts and ends with no adapter in the engine (each test module has its
    own `engine` fixture)."""
    assert engine.adapters() == []
    yield
    for adapter in engine.adapters():
        loop.run(engine.remove_adapter(adapter))


async def chunks_of(engine, prompt, options, lora, request_id) -> list[GenerationChunk]:
    return [chunk async for chunk in engine.stream(prompt, options, lora, request_id)]


def stream_and_whole(
    engine: Any, loop: LoopThread, prompt_ids: list[int], options: SamplingOptions
) -> tuple[list[GenerationChunk], GenerationChunk]:
    """The same request streamed and whole, checked to agree piece by piece."""
    chunks = loop.run(chunks_of(engine, prompt_ids, options, None, "stream"))
    whole = loop.run(engine.generate(prompt_ids, options, None, "whole"))
    assert len(chunks) > 1
    assert "".join(c.text for c in chunks) == whole.text
    assert [t for c in chunks for t in c.token_ids] == whole.token_ids
    assert [c.finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    return chunks, whole
