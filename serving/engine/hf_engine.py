"""The reference engine: transformers + PEFT, one request at a time.

It serves the same protocol as `VLLMEngine` with the libraries training uses, so tests can
check vLLM's tokens against it, and it is the fallback where vLLM cannot be installed.
All adapters live in one `PeftModel` under their own names; each request selects its
adapter (or disables adapters for the base model) under a lock, and generation runs in a
worker thread so the event loop stays free. Throughput is one sequence at a time.
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
from peft import PeftModel
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer

from serving.engine.base import (
    EngineError,
    FinishReason,
    GenerationChunk,
    LoadedAdapter,
    SamplingOptions,
)
from serving.engine.requests import completion_budget
from serving.engine.settings import EngineSettings
from serving.engine.shared import EngineRequest, TableEngine

_END = object()


class _TokenQueue(BaseStreamer):
    """Hands each new token from `generate` (in its thread) to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
        self._loop, self._queue, self._prompt_seen = loop, queue, False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate() first passes the prompt
            self._prompt_seen = True
            return
        self._loop.call_soon_threadsafe(self._queue.put_nowait, value.reshape(-1).tolist())

    def end(self) -> None:
        pass


class _Cancelled(StoppingCriteria):
    """Stops `generate` once the consumer has what it needs or went away."""

    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.full(
            (input_ids.shape[0],), self._event.is_set(), dtype=torch.bool, device=input_ids.device
        )


def _find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    """Where the earliest stop string starts in `text`, if any does."""
    found = [i for i in (text.find(stop) for stop in stops) if i >= 0]
    return min(found) if found else None


def _settled(text: str, stops: tuple[str, ...]) -> str:
    """The part of unfinished `text` that can be sent: without a tail that may yet become a
    stop string, and without an incomplete UTF-8 character."""
    keep = len(text)
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                keep = min(keep, len(text) - size)
                break
    return text[:keep].rstrip("\ufffd")


class TransformersEngine(TableEngine):
    """The `Engine` protocol on transformers + PEFT. Call it from one event loop."""

    name = "transformers"
    label = "transformers"

    def __init__(self, model_path: str | Path, settings: EngineSettings) -> None:
        super().__init__(model_path, settings)
        # Held by whoever runs the model or changes its adapters (always in a worker thread).
        self._lock = threading.Lock()
        self._model: PreTrainedModel | PeftModel | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._eos: set[int] = set()
        self._pad_id = 0

    @property
    def device(self) -> torch.device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    @property
    def dtype(self) -> torch.dtype:
        if self.settings.dtype == "auto":
            return torch.bfloat16 if self.device.type == "cuda" else torch.float32
        return getattr(torch, self.settings.dtype)

    async def start(self) -> None:
        """Load the tokenizer and the base model."""
        if self._model is not None:
            return
        if not (self.model_path / "config.json").is_file():
            raise EngineError(f"{self.model_path}: not a model folder (no config.json)")
        try:
            await asyncio.to_thread(self._load)
        except Exception as err:
            raise EngineError(f"transformers could not load {self.model_path}: {err}") from err

    def _load_base(self) -> PreTrainedModel:
        model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=self.dtype)
        return model.to(self.device).eval()

    def _load(self) -> None:
        tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        model = self._load_base()
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids)
        with self._lock:
            self._tokenizer, self._model = tokenizer, model
            self._eos, self._pad_id = eos_ids, pad_id

    async def shutdown(self) -> None:
        """Drop the model (after a running generation, if any, has stopped)."""
        self._table.clear()
        await asyncio.to_thread(self._unload_all)

    def _unload_all(self) -> None:
        with self._lock:
            self._model = None
            self._tokenizer = None

    def _require_started(self) -> PreTrainedTokenizerBase:
        if self._model is None or self._tokenizer is None:
            raise EngineError("the transformers engine is not running; call start() first")
        return self._tokenizer

    @staticmethod
    def _peft_name(adapter: LoadedAdapter) -> str:
        return f"lorag_{adapter.engine_id}"  # adapter keys may hold characters PEFT refuses

    async def _chunks(self, request: EngineRequest) -> AsyncIterator[GenerationChunk]:
        """`stream`: closing the iterator early stops the generation at the next token."""
        prompt_token_ids, options, adapter, request_id = request
        tokenizer = self._require_started()
        max_tokens = completion_budget(prompt_token_ids, options, self.settings.max_model_len)
        with self._table.use(adapter):
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue = asyncio.Queue()
            cancel = threading.Event()
            job = asyncio.ensure_future(
                asyncio.to_thread(
                    self._generate_blocking,
                    list(prompt_token_ids),
                    options,
                    max_tokens,
                    adapter,
                    _TokenQueue(loop, queue),
                    cancel,
                )
            )
            job.add_done_callback(lambda _: queue.put_nowait(_END))
            token_ids: list[int] = []
            sent = ""
            finish: FinishReason | None = None
            try:
                while finish is None:
                    item = await queue.get()
                    if item is _END:
                        if job.exception() is not None:
                            raise EngineError(
                                f"transformers failed on request {request_id}: {job.exception()}"
                            ) from job.exception()
                        new_ids: list[int] = []
                        finish = "length" if len(token_ids) >= max_tokens else "stop"
                    else:
                        new_ids = item
                        token_ids.extend(new_ids)
                        if token_ids[-1] in self._eos:
                            finish = "stop"
                        elif len(token_ids) >= max_tokens:
                            finish = "length"
                    text = tokenizer.decode(token_ids, skip_special_tokens=True)
                    stop_at = _find_stop(text, options.stop)
                    if stop_at is not None:
                        text, finish = text[:stop_at], "stop"
                    visible = text if finish is not None else _settled(text, options.stop)
                    delta, sent = visible[len(sent) :], visible
                    yield GenerationChunk(
                        text=delta,
                        token_ids=new_ids,
                        finish_reason=finish,
                        prompt_tokens=len(prompt_token_ids),
                        completion_tokens=len(token_ids),
                    )
            finally:
                cancel.set()
                await asyncio.wait([job])

    def _generate_blocking(
        self,
        prompt_token_ids: list[int],
        options: SamplingOptions,
        max_tokens: int,
        adapter: LoadedAdapter | None,
        streamer: BaseStreamer,
        cancel: threading.Event,
    ) -> None:
        with self._lock:
            model = self._model
            if model is None:
                raise EngineError("the engine was shut down")
            sampling: dict[str, object] = {"do_sample": False}
            if options.temperature > 0:
                sampling = {
                    "do_sample": True,
                    "temperature": options.temperature,
                    "top_p": options.top_p,
                    "top_k": 0,
                }
                if options.seed is not None:
                    torch.manual_seed(options.seed)  # under the lock: one generation at a time
            selection: AbstractContextManager = nullcontext()
            if isinstance(model, PeftModel):
                if adapter is not None:
                    model.set_adapter(self._peft_name(adapter))
                else:
                    model.set_adapter(next(iter(model.peft_config)))
                    selection = model.disable_adapter()
            input_ids = torch.tensor([prompt_token_ids], device=self.device)
            with selection, torch.inference_mode():
                model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    max_new_tokens=max_tokens,
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([_Cancelled(cancel)]),
                    pad_token_id=self._pad_id,
                    **sampling,
                )

    def _check_running(self) -> None:
        self._require_started()

    async def _attach(self, adapter: LoadedAdapter) -> None:
        await asyncio.to_thread(self._load_adapter, adapter)

    async def _detach(self, adapter: LoadedAdapter) -> None:
        await asyncio.to_thread(self._unload_adapter, adapter)

    def _load_adapter(self, adapter: LoadedAdapter) -> None:
        name = self._peft_name(adapter)
        with self._lock:
            model = self._model
            if model is None:
                raise EngineError("the engine was shut down")
            if isinstance(model, PeftModel):
                try:
                    model.load_adapter(str(adapter.path), adapter_name=name)
                except Exception:
                    if name in model.peft_config:
                        model.delete_adapter(name)
                    raise
            else:
                try:
                    model = PeftModel.from_pretrained(model, str(adapter.path), adapter_name=name)
                except Exception:
                    # PEFT may have injected half an adapter into the base model: reload it.
                    self._model = self._load_base()
                    raise
            self._model = model.eval()

    def _unload_adapter(self, adapter: LoadedAdapter) -> None:
        name = self._peft_name(adapter)
        with self._lock:
            model = self._model
            if not isinstance(model, PeftModel) or name not in model.peft_config:
                return
            if len(model.peft_config) == 1:
                # PEFT cannot run with no adapter at all: go back to the plain base model.
                self._model = model.unload()
            else:
                with warnings.catch_warnings():  # "Adapter … was active which is now deleted"
                    warnings.simplefilter("ignore", UserWarning)
                    model.delete_adapter(name)
