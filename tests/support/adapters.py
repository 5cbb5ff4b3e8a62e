"""Random LoRA adapters for tests: real PEFT checkpoints with a lorag manifest, no training.

An adapter made here changes the model's greedy output clearly, so a test can tell which
adapter (or none) served a request just by comparing tokens with a reference.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from contracts.manifest import AdapterManifest, fingerprint_model
from retrieval.prompt import PROMPT_FORMAT


def make_random_adapter(
    base_dir: Path,
    out_dir: Path,
    seed: int,
    r: int = 8,
    name: str | None = None,
    scale: float = 1.0,
    prompt_format: str = PROMPT_FORMAT,
) -> Path:
    """Write a PEFT LoRA adapter for `base_dir` with random non-zero weights to `out_dir`.

    LoRA sits on every linear layer except the output head (`target_modules="all-linear"`).
    Both A and B are drawn from N(0, `scale` / sqrt(fan_in)) with `seed`, which makes the
    update large enough that greedy outputs differ from the base model's within a few tokens.
    A `lorag-adapter.json` manifest pins the base model's fingerprint and the prompt format,
    as `lorag train` would. Returns `out_dir`.
    """
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=r,
        lora_alpha=r,  # scaling 1: the update is exactly B @ A
        target_modules="all-linear",
        lora_dropout=0.0,
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param_name, param in sorted(peft_model.named_parameters()):
            if "lora_A" in param_name or "lora_B" in param_name:
                fan_in = param.shape[1]
                noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
                param.copy_(noise * scale / fan_in**0.5)
    out_dir.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(out_dir)
    adapter_name = name or out_dir.name
    AdapterManifest(
        name=adapter_name,
        base_model=str(base_dir),
        base_fingerprint=fingerprint_model(base_dir),
        prompt_format=prompt_format,
        lora={"r": r, "lora_alpha": r, "target_modules": "all-linear", "seed": seed},
        lorag_version="test",
    ).save(out_dir)
    return out_dir
