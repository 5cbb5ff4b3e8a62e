"""The transformers + PEFT engine: the same protocol as vLLM's, checked against plain PEFT."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.engine import hf_engine
from serving.engine.base import (
    AdapterCapacityError,
    Engine,
    EngineError,
    GenerationChunk,
    LoadedAdapter,
    SamplingOptions,
)
from serving.engine.errors import InvalidRequestError, UnknownAdapterError
from serving.engine.hf_engine import TransformersEngine
from serving.engine.settings import EngineSettings
from tests.serving.engine.conftest import chunks_of, stream_and_whole

MAX_TOKENS = 24
GREEDY = SamplingOptions(max_tokens=MAX_TOKENS)
SETTINGS = EngineSettings(kind="transformers", max_adapters=2, max_model_len=256)


@pytest.fixture(scope="module")
def engine(loop, tiny_llama: Path) -> Iterator[TransformersEngine]:
    hf = TransformersEngine(tiny_llama, SETTINGS)
    loop.run(hf.start())
    yield hf
    loop.run(hf.shutdown())


def adapter(name: str, path: Path, engine_id: int, version: int = 1) -> LoadedAdapter:
    return LoadedAdapter(name=name, version=version, path=path, engine_id=engine_id)


def test_implements_the_protocol(engine) -> None:
    assert isinstance(engine, Engine)
    assert engine.max_adapters == 2


def test_greedy_equals_peft_reference(
    engine, loop, clean, adapter_dirs, reference, prompt_ids
) -> None:
    alpha = adapter("alpha", adapter_dirs["alpha"], 1)
    beta = adapter("beta", adapter_dirs["beta"], 2)
    base_before = loop.run(engine.generate(prompt_ids, GREEDY, None, "base-0"))
    loop.run(engine.add_adapter(alpha))
    loop.run(engine.add_adapter(beta))
    requests = [None, alpha, beta, None, beta, alpha]

    async def concurrently() -> list[GenerationChunk]:
        return await asyncio.gather(
            *(
                engine.generate(prompt_ids, GREEDY, lora, f"c-{i}")
                for i, lora in enumerate(requests)
            )
        )

    results = loop.run(concurrently())
    for lora, result in zip(requests, results):
        name = lora.name if lora else None
        assert result.token_ids == reference.greedy(prompt_ids, name, MAX_TOKENS), name
    assert base_before.token_ids == reference.greedy(prompt_ids, None, MAX_TOKENS)
    assert results[1].token_ids != results[0].token_ids != results[2].token_ids


def test_remove_the_last_adapter_and_add_again(
    engine, loop, clean, adapter_dirs, reference, prompt_ids
) -> None:
    alpha = adapter("alpha", adapter_dirs["alpha"], 3)
    loop.run(engine.add_adapter(alpha))
    loop.run(engine.remove_adapter(alpha))
    assert engine.adapters() == []
    with pytest.raises(UnknownAdapterError, match="alpha@v1"):
        loop.run(engine.generate(prompt_ids, GREEDY, alpha, "gone"))
    base = loop.run(engine.generate(prompt_ids, GREEDY, None, "base"))
    assert base.token_ids == reference.greedy(prompt_ids, None, MAX_TOKENS)
    again = adapter("alpha", adapter_dirs["alpha"], 4, version=2)
    loop.run(engine.add_adapter(again))
    result = loop.run(engine.generate(prompt_ids, GREEDY, again, "again"))
    assert result.token_ids == reference.greedy(prompt_ids, "alpha", MAX_TOKENS)


def test_capacity(engine, loop, clean, adapter_dirs) -> None:
    first = [adapter(n, adapter_dirs[n], i) for i, n in enumerate(("alpha", "beta"), start=5)]
    for lora in first:
        loop.run(engine.add_adapter(lora))
    with pytest.raises(AdapterCapacityError, match="holds 2 of 2 adapters"):
        loop.run(engine.add_adapter(adapter("gamma", adapter_dirs["gamma"], 7)))
    with pytest.raises(EngineError, match="already registered"):
        loop.run(engine.add_adapter(first[0]))
    assert engine.adapters() == first


@pytest.mark.parametrize("with_other_adapter", [False, True])
def test_a_bad_adapter_fails_at_load_and_changes_nothing(
    engine, loop, clean, adapter_dirs, reference, prompt_ids, tmp_path, with_other_adapter
) -> None:
    # Without another adapter PEFT wraps the base model afresh; with one it adds to it.
    beta = adapter("beta", adapter_dirs["beta"], 10)
    if with_other_adapter:
        loop.run(engine.add_adapter(beta))
    broken = tmp_path / "broken"
    shutil.copytree(adapter_dirs["alpha"], broken)
    (broken / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(EngineError, match="could not load adapter broken@v1"):
        loop.run(engine.add_adapter(adapter("broken", broken, 11)))
    assert [a.name for a in engine.adapters()] == (["beta"] if with_other_adapter else [])
    base = loop.run(engine.generate(prompt_ids, GREEDY, None, "after-broken"))
    assert base.token_ids == reference.greedy(prompt_ids, None, MAX_TOKENS)
    if with_other_adapter:
        other = loop.run(engine.generate(prompt_ids, GREEDY, beta, "beta-after-broken"))
        assert other.token_ids == reference.greedy(prompt_ids, "beta", MAX_TOKENS)


def test_streaming_matches_the_whole_generation(engine, loop, prompt_ids) -> None:
    _, whole = stream_and_whole(engine, loop, prompt_ids, GREEDY)
    assert (whole.finish_reason, whole.completion_tokens) == ("length", MAX_TOKENS)
    assert whole.prompt_tokens == len(prompt_ids)
    assert whole.text.strip()


def test_stop_strings(engine, loop, prompt_ids) -> None:
    full = loop.run(engine.generate(prompt_ids, GREEDY, None, "full"))
    middle = len(full.text) // 2
    stop = full.text[middle : middle + 3]
    options = SamplingOptions(max_tokens=MAX_TOKENS, stop=("never-there", stop))
    result = loop.run(engine.generate(prompt_ids, options, None, "stop"))
    chunks = loop.run(chunks_of(engine, prompt_ids, options, None, "stop-stream"))
    assert result.text == full.text[: full.text.find(stop)]
    assert result.finish_reason == "stop"
    assert result.token_ids == full.token_ids[: len(result.token_ids)]
    assert len(result.token_ids) < len(full.token_ids)
    assert "".join(c.text for c in chunks) == result.text


def test_stops_at_end_of_turn(engine, loop, reference, prompt_ids) -> None:
    # Greedy base output of this prompt ends with <eos> (id 1) after 156 tokens.
    expected = reference.greedy(prompt_ids, None, 200)
    assert expected[-1] == 1 and len(expected) < 200
    result = loop.run(engine.generate(prompt_ids, SamplingOptions(max_tokens=200), None, "eos"))
    assert (result.token_ids, result.finish_reason) == (expected, "stop")


def test_seeded_sampling_is_reproducible(engine, loop, prompt_ids) -> None:
    def sample(seed: int) -> list[int]:
        options = SamplingOptions(max_tokens=16, temperature=1.0, top_p=0.9, seed=seed)
        return loop.run(engine.generate(prompt_ids, options, None, f"seed-{seed}")).token_ids

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_closing_a_stream_stops_generating(engine, loop, prompt_ids, monkeypatch) -> None:
    produced: list[int] = []
    put = hf_engine._TokenQueue.put

    def counting_put(self, value) -> None:
        produced.append(value.numel())
        put(self, value)

    monkeypatch.setattr(hf_engine._TokenQueue, "put", counting_put)

    async def abandon() -> GenerationChunk:
        stream = engine.stream(prompt_ids, SamplingOptions(max_tokens=100), None, "abandon")
        first = await anext(stream)
        await stream.aclose()  # returns once the worker thread has stopped
        return first

    first = loop.run(abandon())
    assert first.finish_reason is None
    # generate() stopped early (the first put is the prompt; greedy has no <eos> before 100).
    assert len(produced) - 1 < 100


def test_bad_requests_are_refused_clearly(engine, loop, adapter_dirs) -> None:
    with pytest.raises(InvalidRequestError, match="256 tokens"):
        loop.run(engine.generate([5] * 256, GREEDY, None, "too-long"))
    with pytest.raises(InvalidRequestError, match="empty"):
        loop.run(engine.generate([], GREEDY, None, "empty"))
    ghost = adapter("ghost", adapter_dirs["alpha"], 99)
    with pytest.raises(UnknownAdapterError, match="ghost@v1 is not registered"):
        loop.run(engine.generate([5, 6], GREEDY, ghost, "ghost"))
    near_full = loop.run(engine.generate([5] * 250, GREEDY, None, "near-full"))
    assert (len(near_full.token_ids), near_full.finish_reason) == (6, "length")


def test_not_started(loop, tiny_llama, tmp_path) -> None:
    idle = TransformersEngine(tiny_llama, SETTINGS)
    with pytest.raises(EngineError, match="call start"):
        loop.run(idle.generate([5, 6], GREEDY, None, "idle"))
    with pytest.raises(EngineError, match="no config.json"):
        loop.run(TransformersEngine(tmp_path, SETTINGS).start())
