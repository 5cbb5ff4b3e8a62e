"""Chat completions: route a request to a domain/adapter, retrieve, render, generate.

The prompt is rendered in exactly one way, the way training renders it:
`build_messages(messages, hits, system_prompt)`, then the tokenizer's chat template with a
generation prompt (`chat` layout) or the plain-text completion layout, which also stops
generation at the end of the answer's line (`completion`). The engine receives token ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jinja2 import TemplateError
from pydantic import BaseModel

from retrieval.errors import DomainNotFoundError, RetrievalError
from retrieval.prompt import COMPLETION_STOP, build_messages, completion_ids
from retrieval.results import Hit
from serving.context import ServerContext
from serving.engine.base import EngineError, GenerationChunk, SamplingOptions
from serving.engine.errors import InvalidRequestError
from serving.errors import APIError, bad_request, conflict, error_body
from serving.feedback.records import Exchange, FeedbackStoreError
from serving.feedback.store import FeedbackStore
from serving.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChunkChoice,
    CompletionRequest,
    Delta,
    ServedBy,
    Source,
    Usage,
)
from serving.routing import Route, resolve_route
from serving.search import retrieval_api_error

log = logging.getLogger("lorag.serving")
audit_log = logging.getLogger("lorag.audit")


@dataclass
class PreparedChat:
    request_id: str
    created: int
    model: str
    route: Route
    prompt_ids: list[int]
    options: SamplingOptions
    principal: str
    label: str  # the model's metric label (ServerContext.model_label)
    sources: list[Source] = field(default_factory=list)
    index_version: str | None = None
    include_usage: bool = False
    started: float = field(default_factory=time.perf_counter)
    # For feedback: the conversation as the client sent it (no context) and the system prompt.
    messages: list[dict[str, str]] = field(default_factory=list)
    system_prompt: str | None = None

    def envelope(self) -> dict[str, Any]:
        """The fields every response body and chunk of this request starts with."""
        return {"id": self.request_id, "created": self.created, "model": self.model}


def stop_strings(stop: str | list[str] | None) -> tuple[str, ...]:
    """A request's `stop` as a tuple, refused (400) beyond 8 strings or with an empty one."""
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if len(stops) > 8 or not all(stops):
        raise bad_request("stop: at most 8 non-empty strings", param="stop")
    return stops


def new_request_id(prefix: str = "chatcmpl") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


class ChatService:
    def __init__(self, ctx: ServerContext, feedback: FeedbackStore | None = None) -> None:
        self.ctx = ctx
        self.feedback = feedback  # records answered exchanges, when feedback is enabled

    # Preparation -------------------------------------------------------------------------

    async def prepare(
        self, request: ChatCompletionRequest, request_id: str, principal: str = ""
    ) -> PreparedChat:
        ctx = self.ctx
        limits = ctx.settings.limits
        if request.n not in (None, 1):
            raise bad_request("only n=1 is supported", param="n")
        if len(request.messages) > limits.max_messages:
            raise bad_request(
                f"{len(request.messages)} messages, over the limit of {limits.max_messages}",
                param="messages",
            )
        asked = request.max_completion_tokens or request.max_tokens
        param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
        if asked is not None and asked > limits.max_tokens:
            raise bad_request(
                f"{param} is {asked}, over the limit of {limits.max_tokens}", param=param
            )
        stops = stop_strings(request.stop)
        messages = self._messages(request)
        route = resolve_route(ctx, request.model, request.lorag)

        hits: list[Hit] = []
        if route.retrieval and route.domain is not None:
            hits = await self._retrieve(route, messages)
        system_prompt = route.domain.system_prompt if route.domain else None
        try:
            chat = build_messages(messages, hits, system_prompt)
            if ctx.layout == "completion":
                prompt_ids, _ = completion_ids(ctx.tokenizer, chat)
                stops = (*stops, COMPLETION_STOP)  # where a completion-layout answer ends
            else:
                prompt_ids = ctx.tokenizer.apply_chat_template(
                    chat, add_generation_prompt=True, tokenize=True, return_dict=False
                )
        except (ValueError, TemplateError) as err:
            raise bad_request(f"cannot render the conversation: {err}", param="messages") from err

        room = ctx.max_model_len - len(prompt_ids)
        max_tokens = asked or min(ctx.settings.sampling.max_tokens, limits.max_tokens)
        if asked is None:
            max_tokens = min(max_tokens, room)
        if room < 1 or max_tokens > room:
            over = f"and {asked} more were asked for, over" if asked else "leaving no room in"
            raise bad_request(
                f"the prompt has {len(prompt_ids)} tokens (retrieved context included) {over} "
                f"the model's context of {ctx.max_model_len}; shorten the conversation, "
                "lower k or max_tokens",
                param="messages",
                code="context_length_exceeded",
            )
        return self.prepared(
            request, request_id, route, prompt_ids, max_tokens, stops, principal,
            sources=Source.numbered(hits),
            index_version=hits[0].index_version if hits else None,
            include_usage=bool(request.stream_options and request.stream_options.include_usage),
            messages=messages,
            system_prompt=system_prompt,
        )  # fmt: skip

    def prepared(
        self,
        request: ChatCompletionRequest | CompletionRequest,
        request_id: str,
        route: Route,
        prompt_ids: list[int],
        max_tokens: int,
        stops: tuple[str, ...],
        principal: str,
        **extra: Any,
    ) -> PreparedChat:
        """A checked request, ready for the engine: its sampling over the server's defaults."""
        sampling = self.ctx.settings.sampling
        options = SamplingOptions(
            max_tokens=max_tokens,
            temperature=sampling.temperature
            if request.temperature is None
            else request.temperature,
            top_p=sampling.top_p if request.top_p is None else request.top_p,
            stop=stops,
            seed=request.seed,
        )
        return PreparedChat(
            request_id=request_id,
            created=int(time.time()),
            model=request.model,
            route=route,
            prompt_ids=list(prompt_ids),
            options=options,
            principal=principal,
            label=self.ctx.model_label(request.model),
            **extra,
        )

    @staticmethod
    def _messages(request: ChatCompletionRequest) -> list[dict[str, str]]:
        messages = []
        for position, message in enumerate(request.messages):
            role = "system" if message.role in ("system", "developer") else message.role
            if role == "system" and position != 0:
                raise bad_request(
                    "a system message may only come first", param=f"messages.{position}.role"
                )
            messages.append({"role": role, "content": message.text()})
        if not any(m["role"] == "user" for m in messages):
            raise bad_request("the conversation has no user message", param="messages")
        return messages

    async def _retrieve(self, route: Route, messages: list[dict[str, str]]) -> list[Hit]:
        assert route.domain is not None
        question = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        if not question.strip():
            return []
        try:
            name = route.domain.name
            label = self.ctx.domain_label(name)
            return await self.ctx.search.search(name, question, route.k, route.mode, label=label)
        except DomainNotFoundError as err:
            raise conflict(
                f"domain {route.domain.name!r} has no index yet; upload its documents and "
                f"POST /admin/domains/{route.domain.name}/reindex ({err})",
                param="model",
                code="index_not_found",
            ) from err
        except (RetrievalError, ValueError) as err:
            raise retrieval_api_error(err, param="model") from err

    # Generation --------------------------------------------------------------------------

    def served_by(self, prepared: PreparedChat, adapter_version: int | None) -> ServedBy:
        route = prepared.route
        return ServedBy(
            domain=route.domain.name if route.domain else None,
            adapter=route.adapter,
            adapter_version=adapter_version,
            index_version=prepared.index_version,
        )

    def _lease(self, prepared: PreparedChat):
        lease = self.ctx.registry.lease(prepared.route.adapter)
        if lease is None:
            raise conflict(
                f"adapter {prepared.route.adapter!r} was unloaded", code="adapter_not_loaded"
            )
        return lease

    async def complete(self, prepared: PreparedChat) -> ChatCompletionResponse:
        """A whole `chat.completion` response."""
        result, version = await self.generate(prepared)
        await self._remember(prepared, version, result)
        return ChatCompletionResponse(
            **prepared.envelope(),
            choices=[
                ChatChoice(
                    message=AssistantMessage(content=result.text),
                    finish_reason=result.finish_reason or "stop",
                )
            ],
            usage=usage(prepared, result),
            sources=prepared.sources,
            lorag=self.served_by(prepared, version),
        )

    async def generate(self, prepared: PreparedChat) -> tuple[GenerationChunk, int | None]:
        """The whole generation of a prepared request, on the adapter version it leased."""
        ctx = self.ctx
        lease = self._lease(prepared)
        ctx.metrics.in_flight.inc()
        status, result = "error", None
        try:
            result = await ctx.engine.generate(
                prepared.prompt_ids, prepared.options, lease.adapter, prepared.request_id
            )
            status = "ok"
        except asyncio.CancelledError:
            status = "cancelled"  # the client went away; the engine aborted the request
            raise
        except InvalidRequestError as err:
            raise bad_request(str(err), param="messages") from err
        except EngineError as err:
            raise APIError(500, f"generation failed: {err}", code="engine_error") from err
        finally:
            lease.release()
            ctx.metrics.in_flight.dec()
            version = lease.adapter.version if lease.adapter else None
            self._record(prepared, version, result, status, stream=False)
        return result, version

    async def stream(self, prepared: PreparedChat) -> AsyncIterator[str]:
        """Server-sent events: `chat.completion.chunk`s, then `data: [DONE]`."""
        ctx = self.ctx
        try:
            lease = self._lease(prepared)
        except APIError as err:
            yield _sse(err.body())
            yield "data: [DONE]\n\n"
            return
        ctx.metrics.in_flight.inc()
        version = lease.adapter.version if lease.adapter else None
        status, last, answer = "cancelled", None, []
        usage_null = {"usage": None} if prepared.include_usage else {}

        def chunk(choices: list[ChunkChoice], **extra: Any) -> str:
            return _sse(ChatCompletionChunk(**prepared.envelope(), choices=choices, **extra))

        def delta(finish: str | None = None, extensions: dict | None = None, **fields: Any) -> str:
            choice = ChunkChoice(delta=Delta(**fields), finish_reason=finish)
            return chunk([choice], **usage_null, **(extensions or {}))

        try:
            yield delta(role="assistant", content="")
            pieces = ctx.engine.stream(
                prepared.prompt_ids, prepared.options, lease.adapter, prepared.request_id
            )
            first = True
            async with contextlib.aclosing(pieces):
                async for piece in pieces:
                    last = piece
                    answer.append(piece.text)
                    if piece.text:
                        if first:
                            ctx.metrics.first_token.labels(prepared.label).observe(
                                time.perf_counter() - prepared.started
                            )
                            first = False
                        yield delta(content=piece.text)
            yield delta(
                (last.finish_reason if last else None) or "stop",
                {"sources": prepared.sources, "lorag": self.served_by(prepared, version)},
            )
            if prepared.include_usage:
                yield chunk([], usage=usage(prepared, last))
            status = "ok"
            # Before [DONE]: feedback sent as soon as the stream ends finds the exchange.
            await self._remember(prepared, version, last, "".join(answer))
            yield "data: [DONE]\n\n"
        except EngineError as err:
            status = "error"
            log.error("generation failed for %s: %s", prepared.request_id, err)
            yield _sse(error_body(500, f"generation failed: {err}", code="engine_error"))
            yield "data: [DONE]\n\n"
        finally:
            lease.release()
            ctx.metrics.in_flight.dec()
            self._record(prepared, version, last, status, stream=True)

    # Accounting --------------------------------------------------------------------------

    async def _remember(
        self,
        prepared: PreparedChat,
        adapter_version: int | None,
        result: GenerationChunk | None,
        text: str | None = None,
    ) -> None:
        """Record an answered exchange for feedback; a failure is logged, never raised."""
        if self.feedback is None:
            return
        served = self.served_by(prepared, adapter_version)
        exchange = Exchange(
            response_id=prepared.request_id,
            model=prepared.model,
            domain=served.domain,
            adapter=served.adapter,
            adapter_version=served.adapter_version,
            index_version=served.index_version,
            system_prompt=prepared.system_prompt,
            messages=prepared.messages,
            answer=text if text is not None else (result.text if result else ""),
            finish_reason=result.finish_reason if result else None,
            sources=[source.doc_id for source in prepared.sources],
            api_key=prepared.principal or None,
        )
        try:
            await asyncio.to_thread(self.feedback.record_exchange, exchange)
        except (FeedbackStoreError, OSError) as err:
            log.error("could not record %s for feedback: %s", prepared.request_id, err)

    def _record(
        self,
        prepared: PreparedChat,
        adapter_version: int | None,
        result: GenerationChunk | None,
        status: str,
        stream: bool,
    ) -> None:
        """Metrics and the audit line of one finished (or failed) chat request."""
        metrics = self.ctx.metrics
        label = prepared.label
        latency = time.perf_counter() - prepared.started
        used = usage(prepared, result)
        metrics.chat_requests.labels(label, status).inc()
        metrics.chat_latency.labels(label).observe(latency)
        metrics.prompt_tokens.labels(label).inc(used.prompt_tokens)
        metrics.completion_tokens.labels(label).inc(used.completion_tokens)
        served = self.served_by(prepared, adapter_version)
        audit_log.info(
            json.dumps(
                {
                    "event": "chat_completion",
                    "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                    "request_id": prepared.request_id,
                    "status": status,
                    "model": prepared.model,
                    **served.model_dump(),
                    "retrieval": prepared.route.retrieval,
                    "k": prepared.route.k if prepared.route.retrieval else None,
                    "sources": [s.doc_id for s in prepared.sources],
                    "prompt_tokens": used.prompt_tokens,
                    "completion_tokens": used.completion_tokens,
                    "finish_reason": result.finish_reason if result else None,
                    "latency_s": round(latency, 4),
                    "stream": stream,
                    "api_key": prepared.principal or None,
                }
            )
        )


def usage(prepared: PreparedChat, result: GenerationChunk | None) -> Usage:
    """Token counts of a request: the engine's, else the prompt as rendered."""
    prompt = (result.prompt_tokens if result else 0) or len(prepared.prompt_ids)
    return Usage.of(prompt, result.completion_tokens if result else 0)


def _sse(payload: BaseModel | dict[str, Any]) -> str:
    """One server-sent event (compact, ASCII-escaped JSON, as before the typed bodies)."""
    body = payload.model_dump() if isinstance(payload, BaseModel) else payload
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"
