"""The vLLM engine on CPU with the tiny Llama: one engine for the whole module.

`test_mixed_batch_equals_peft_reference` guards vLLM-CPU's mixed-batch LoRA bug (base
requests reading the last LoRA slot); keep it. `test_lora_slot_bug.py` shows the bug itself.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.engine.base import (
    AdapterCapacityError,
    EngineError,
    GenerationChunk,
    LoadedAdapter,
    SamplingOptions,
)
from serving.engine.errors import InvalidRequestError, UnknownAdapterError
from serving.engine.settings import EngineSettings
from tests.serving.engine.conftest import chunks_of, stream_and_whole
from tests.support.adapters import make_random_adapter

pytestmark = pytest.mark.vllm

MAX_TOKENS = 24
GREEDY = SamplingOptions(max_tokens=MAX_TOKENS, temperature=0.0)
SETTINGS = EngineSettings(max_adapters=3, max_model_len=512, kv_cache_gib=0.25, max_num_seqs=16)


def _lora_slots(worker) -> list[int | None]:
    """Runs inside the vLLM worker: which adapter (lora_int_id) sits in each LoRA slot."""
    return list(worker.model_runner.lora_manager._adapter_manager.lora_index_to_id)


async def lora_slots(engine) -> list[int | None]:
    (slots,) = await engine._llm.collective_rpc(_lora_slots)
    return slots


@pytest.fixture(scope="module")
def engine(loop, tiny_llama: Path) -> Iterator:
    from serving.engine.vllm_engine import VLLMEngine

    with pytest.MonkeyPatch.context() as patch:
        # Lets `lora_slots` send a function to the worker; for this test engine only.
        patch.setenv("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        vllm_engine = VLLMEngine(tiny_llama, SETTINGS)
        loop.run(vllm_engine.start(), timeout=600)
        try:
            yield vllm_engine
        finally:
            loop.run(vllm_engine.shutdown(), timeout=120)


@pytest.fixture(scope="module")
def engine_ids() -> Iterator[int]:
    """Engine ids are never reused within an engine's life (vLLM caches by them)."""
    return itertools.count(1)


def adapter(name: str, path: Path, engine_ids: Iterator[int], version: int = 1) -> LoadedAdapter:
    return LoadedAdapter(name=name, version=version, path=path, engine_id=next(engine_ids))


async def gather_generations(engine, prompt, requests) -> list[GenerationChunk]:
    """Submit all requests before awaiting any, so that they run in the same batches."""
    return await asyncio.gather(
        *(
            engine.generate(prompt, GREEDY, lora, f"batch-{i}-{lora.key if lora else 'base'}")
            for i, lora in enumerate(requests)
        )
    )


def test_mixed_batch_equals_peft_reference(
    engine, loop, clean, engine_ids, adapter_dirs, reference, prompt_ids
) -> None:
    """Base and adapter requests in one batch each get exactly their own model's tokens."""
    loras = {n: adapter(n, adapter_dirs[n], engine_ids) for n in ("alpha", "beta", "gamma")}
    for lora in loras.values():
        loop.run(engine.add_adapter(lora))
    order = [None, "alpha", "beta", None, "gamma", "alpha", None, "beta", "gamma", None]
    expected = {n: reference.greedy(prompt_ids, n, MAX_TOKENS) for n in (None, *loras)}
    # The adapters must change the output, or this test could not see a mix-up.
    assert len({tuple(tokens) for tokens in expected.values()}) == len(expected)

    results = loop.run(gather_generations(engine, prompt_ids, [loras.get(n) for n in order]))

    for name, result in zip(order, results):
        assert result.token_ids == expected[name], f"request for {name or 'the base model'}"
        assert result.finish_reason in ("stop", "length")
    # The spare slot (the one base requests read on CPU) never held an adapter.
    slots = loop.run(lora_slots(engine))
    assert len(slots) == SETTINGS.max_adapters + 1
    assert slots[-1] is None
    assert sorted(slots[:-1]) == sorted(lora.engine_id for lora in loras.values())


def test_capacity_and_the_spare_slot(engine, loop, clean, engine_ids, adapter_dirs) -> None:
    first = [adapter(n, adapter_dirs[n], engine_ids) for n in ("alpha", "beta", "gamma")]
    for lora in first:
        loop.run(engine.add_adapter(lora))
    extra = adapter("delta", adapter_dirs["delta"], engine_ids)
    with pytest.raises(AdapterCapacityError, match="max_adapters"):
        loop.run(engine.add_adapter(extra))
    assert engine.adapters() == first
    # Freeing a slot and filling it again still leaves the last slot empty.
    loop.run(engine.remove_adapter(first[1]))
    loop.run(engine.add_adapter(extra))
    assert engine.adapters() == [first[0], first[2], extra]
    slots = loop.run(lora_slots(engine))
    assert slots[-1] is None
    held = [first[0].engine_id, first[2].engine_id, extra.engine_id]
    assert sorted(s for s in slots if s is not None) == held


def test_add_generate_remove_at_run_time(
    engine, loop, clean, engine_ids, adapter_dirs, reference, prompt_ids
) -> None:
    delta = adapter("delta", adapter_dirs["delta"], engine_ids)
    loop.run(engine.add_adapter(delta))
    assert engine.adapters() == [delta]
    result = loop.run(engine.generate(prompt_ids, GREEDY, delta, "runtime-1"))
    assert result.token_ids == reference.greedy(prompt_ids, "delta", MAX_TOKENS)

    loop.run(engine.remove_adapter(delta))
    assert engine.adapters() == []
    with pytest.raises(UnknownAdapterError, match="delta@v1"):
        loop.run(engine.generate(prompt_ids, GREEDY, delta, "runtime-2"))
    with pytest.raises(UnknownAdapterError):
        loop.run(engine.remove_adapter(delta))
    # The base model is untouched, and the same files come back as a new version.
    base = loop.run(engine.generate(prompt_ids, GREEDY, None, "runtime-3"))
    assert base.token_ids == reference.greedy(prompt_ids, None, MAX_TOKENS)
    again = adapter("delta", adapter_dirs["delta"], engine_ids, version=2)
    loop.run(engine.add_adapter(again))
    result = loop.run(engine.generate(prompt_ids, GREEDY, again, "runtime-4"))
    assert result.token_ids == reference.greedy(prompt_ids, "delta", MAX_TOKENS)


def test_bad_adapters_fail_at_load_time(
    engine, loop, clean, engine_ids, tiny_llama, adapter_dirs, reference, prompt_ids, tmp_path
) -> None:
    corrupt = tmp_path / "corrupt"
    shutil.copytree(adapter_dirs["alpha"], corrupt)
    (corrupt / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(EngineError, match="could not load adapter corrupt@v1"):
        loop.run(engine.add_adapter(adapter("corrupt", corrupt, engine_ids)))

    wide = make_random_adapter(tiny_llama, tmp_path / "wide", seed=9, r=32)
    with pytest.raises(EngineError, match="rank 32.*max_lora_rank=16"):
        loop.run(engine.add_adapter(adapter("wide", wide, engine_ids)))

    with pytest.raises(EngineError, match="no adapter_config.json"):
        loop.run(engine.add_adapter(adapter("missing", tmp_path / "missing", engine_ids)))

    assert engine.adapters() == []
    base = loop.run(engine.generate(prompt_ids, GREEDY, None, "after-bad"))
    assert base.token_ids == reference.greedy(prompt_ids, None, MAX_TOKENS)


def test_streaming_matches_the_whole_generation(engine, loop, prompt_ids) -> None:
    chunks, whole = stream_and_whole(engine, loop, prompt_ids, GREEDY)
    assert chunks[-1].finish_reason == whole.finish_reason
    counts = [c.completion_tokens for c in chunks]
    assert counts == sorted(counts) and counts[-1] == len(whole.token_ids)
    assert {c.prompt_tokens for c in chunks} == {len(prompt_ids)}
    assert whole.text.strip()


def test_max_tokens_ends_with_length(engine, loop, prompt_ids) -> None:
    result = loop.run(engine.generate(prompt_ids, SamplingOptions(max_tokens=5), None, "len"))
    assert result.finish_reason == "length"
    assert len(result.token_ids) == result.completion_tokens == 5
    assert result.prompt_tokens == len(prompt_ids)


def test_stop_strings(engine, loop, prompt_ids) -> None:
    full = loop.run(engine.generate(prompt_ids, GREEDY, None, "stop-full"))
    middle = len(full.text) // 2
    stop = full.text[middle : middle + 3]
    expected = full.text[: full.text.find(stop)]
    options = SamplingOptions(max_tokens=MAX_TOKENS, stop=(stop,))

    result = loop.run(engine.generate(prompt_ids, options, None, "stop-1"))
    chunks = loop.run(chunks_of(engine, prompt_ids, options, None, "stop-2"))

    assert result.text == expected
    assert result.finish_reason == "stop"
    assert len(result.token_ids) < len(full.token_ids)
    assert result.token_ids == full.token_ids[: len(result.token_ids)]
    assert "".join(c.text for c in chunks) == expected  # no piece of the stop string leaks


def test_seeded_sampling_is_reproducible(engine, loop, prompt_ids) -> None:
    def sample(seed: int, request_id: str) -> list[int]:
        options = SamplingOptions(max_tokens=16, temperature=1.0, top_p=0.9, seed=seed)
        return loop.run(engine.generate(prompt_ids, options, None, request_id)).token_ids

    assert sample(7, "seed-a") == sample(7, "seed-b")
    assert sample(7, "seed-c") != sample(8, "seed-d")


def test_closing_a_stream_aborts_the_request(engine, loop, prompt_ids) -> None:
    async def abandon() -> tuple[int, int]:
        stream = engine.stream(prompt_ids, SamplingOptions(max_tokens=400), None, "abandon")
        await anext(stream)
        running = engine._llm.get_num_unfinished_requests()
        await stream.aclose()  # what the server does when the client disconnects
        return running, engine._llm.get_num_unfinished_requests()

    assert loop.run(abandon()) == (1, 0)


def test_bad_requests_are_refused_clearly(engine, loop, engine_ids, adapter_dirs) -> None:
    with pytest.raises(InvalidRequestError, match="512 tokens"):
        loop.run(engine.generate([5] * 512, GREEDY, None, "too-long"))
    with pytest.raises(InvalidRequestError, match="empty"):
        loop.run(engine.generate([], GREEDY, None, "empty"))
    never_added = adapter("ghost", adapter_dirs["alpha"], engine_ids)
    with pytest.raises(UnknownAdapterError, match="ghost@v1 is not registered"):
        loop.run(engine.generate([5, 6, 7], GREEDY, never_added, "ghost"))
    # A long prompt gets what room is left, and says so.
    near_full = loop.run(engine.generate([5] * 500, GREEDY, None, "near-full"))
    assert (len(near_full.token_ids), near_full.finish_reason) == (12, "length")


def test_transformers_engine_matches_vllm(
    engine, loop, clean, engine_ids, tiny_llama, adapter_dirs, prompt_ids
) -> None:
    """The reference engine and vLLM give the same tokens and text, base and adapter."""
    from serving.engine.hf_engine import TransformersEngine

    hf = TransformersEngine(tiny_llama, SETTINGS.model_copy(update={"kind": "transformers"}))
    loop.run(hf.start())
    try:
        beta = adapter("beta", adapter_dirs["beta"], engine_ids)
        loop.run(hf.add_adapter(beta))
        loop.run(engine.add_adapter(beta))
        for lora in (None, beta):
            full = loop.run(engine.generate(prompt_ids, GREEDY, lora, "vllm-full"))
            stop = full.text[len(full.text) // 2 :][:3]
            for options in (GREEDY, SamplingOptions(max_tokens=MAX_TOKENS, stop=(stop,))):
                ours = loop.run(hf.generate(prompt_ids, options, lora, "hf"))
                theirs = loop.run(engine.generate(prompt_ids, options, lora, "vllm"))
                assert ours == theirs, f"{lora.key if lora else 'base'} with {options}"
    finally:
        loop.run(hf.shutdown())


def test_stops_at_end_of_turn(engine, loop, reference, prompt_ids) -> None:
    # The greedy base completion of this prompt ends with <eos> (id 1) before 200 tokens.
    expected = reference.greedy(prompt_ids, None, 200)
    assert expected[-1] == 1 and len(expected) < 200
    result = loop.run(engine.generate(prompt_ids, SamplingOptions(max_tokens=200), None, "eos"))
    assert (result.token_ids, result.finish_reason) == (expected, "stop")


def test_removal_waits_for_running_requests(
    engine, loop, clean, engine_ids, adapter_dirs, reference, prompt_ids
) -> None:
    """Replacing a version: requests already running finish on it, new ones are refused."""
    old = adapter("shop", adapter_dirs["alpha"], engine_ids, version=1)
    new = adapter("shop", adapter_dirs["beta"], engine_ids, version=2)

    async def replace() -> tuple[list[int], list[int], bool, bool]:
        await engine.add_adapter(old)
        running = engine.stream(prompt_ids, GREEDY, old, "on-old")
        tokens = list((await anext(running)).token_ids)
        await engine.add_adapter(new)
        removal = asyncio.ensure_future(engine.remove_adapter(old))
        done, _ = await asyncio.wait([removal], timeout=0.5)
        removed_early = bool(done)
        try:
            await engine.generate(prompt_ids, GREEDY, old, "late-on-old")
            refused = False
        except UnknownAdapterError:
            refused = True
        async for chunk in running:
            tokens.extend(chunk.token_ids)
        await running.aclose()
        await asyncio.wait_for(removal, timeout=60)
        on_new = await engine.generate(prompt_ids, GREEDY, new, "on-new")
        return tokens, on_new.token_ids, removed_early, refused

    tokens, on_new, removed_early, refused = loop.run(replace())
    assert not removed_early
    assert refused
    assert tokens == reference.greedy(prompt_ids, "alpha", MAX_TOKENS)
    assert on_new == reference.greedy(prompt_ids, "beta", MAX_TOKENS)
    assert engine.adapters() == [new]


def test_engine_arguments_per_platform(tiny_llama, monkeypatch) -> None:
    from serving.engine import vllm_engine

    cpu = vllm_engine.engine_args(tiny_llama, SETTINGS)
    assert (cpu.dtype, cpu.kv_cache_memory_bytes) == ("float32", 1 << 28)
    assert cpu.enable_lora and cpu.max_lora_rank == 16
    assert cpu.max_loras == cpu.max_cpu_loras == SETTINGS.max_adapters + 1
    monkeypatch.setattr(vllm_engine.current_platform, "is_cpu", lambda: False)
    gpu_settings = SETTINGS.model_copy(update={"tensor_parallel_size": 2, "enforce_eager": True})
    gpu = vllm_engine.engine_args(tiny_llama, gpu_settings)
    assert gpu.dtype == "bfloat16" and gpu.gpu_memory_utilization == 0.85
    assert gpu.kv_cache_memory_bytes is None
    assert (gpu.tensor_parallel_size, gpu.enforce_eager, gpu.max_loras) == (2, True, 4)


def test_factory_builds_the_vllm_engine(tiny_llama) -> None:
    from serving.engine import create_engine
    from serving.engine.vllm_engine import VLLMEngine

    built = create_engine(EngineSettings(max_adapters=2), tiny_llama)
    assert isinstance(built, VLLMEngine) and built.max_adapters == 2
