"""A trained adapter loads in the real vLLM engine and decodes as transformers + PEFT does."""

from __future__ import annotations

import pytest
import torch

from training.adapters import load_adapter_model
from training.model import load_tokenizer


@pytest.mark.vllm
def test_vllm_serves_the_trained_adapter_like_peft(trained, tiny_model):
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    tokenizer = load_tokenizer(tiny_model)
    questions = ["Question 3: what is the support hours?", "Question 9: what is the refund window?"]
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                      tokenize=True, return_dict=True)["input_ids"]
        for q in questions
    ]  # fmt: skip
    peft_model = load_adapter_model(trained.adapter_dir, tiny_model)
    expected = []
    for ids in prompts:
        with torch.no_grad():
            out = peft_model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)
        expected.append(out[0, len(ids) :].tolist())

    # max_loras one above the adapters in use: see the mixed-batch note in RECIPES.md.
    llm = LLM(model=str(tiny_model), dtype="float32", enable_lora=True, max_lora_rank=8,
              max_loras=2, max_model_len=512, kv_cache_memory_bytes=64 << 20)  # fmt: skip
    try:
        params = SamplingParams(max_tokens=12, temperature=0.0)
        lora = LoRARequest("facts", 1, str(trained.adapter_dir))
        inputs = [{"prompt_token_ids": ids} for ids in prompts]
        adapted = llm.generate(inputs, params, lora_request=lora)
        base = llm.generate(inputs, params)
    finally:
        llm.llm_engine.engine_core.shutdown()  # stop the engine processes now
    got = [list(o.outputs[0].token_ids) for o in adapted]
    # vLLM stops at <end_of_turn>; transformers + PEFT too (generation_config), so compare the
    # common prefix and require it to be the whole of the shorter one.
    for want, have in zip(expected, got):
        n = min(len(want), len(have))
        assert n > 0 and want[:n] == have[:n], (want, have)
    assert got != [list(o.outputs[0].token_ids) for o in base]
