"""The OpenAI-compatible API: chat and text completions, models, plus `/v1/search` (scope `chat`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from retrieval.errors import RetrievalError
from serving.chat import new_request_id
from serving.completions import complete_text, prepare_completion
from serving.dependencies import Chat, ChatUser, Context
from serving.errors import bad_request
from serving.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelList,
    ModelMeta,
    SearchHit,
    SearchRequest,
    SearchResponse,
)
from serving.search import retrieval_api_error

router = APIRouter(prefix="/v1", tags=["openai"])

T = TypeVar("T")
DISCONNECT_POLL_S = 0.25
CLIENT_CLOSED = 499  # nginx's code for a request whose client went away; nobody receives it


class ClientDisconnected(Exception):
    """The client closed the connection before its whole answer was ready."""


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and so aborting it in the engine) if the client leaves.

    A streaming answer notices a closed connection when it next writes; a whole answer
    writes only at the end, so without this a departed client's request would run on.
    """
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ClientDisconnected
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


@router.post(
    "/chat/completions",
    response_model=None,
    responses={
        200: {
            "model": ChatCompletionResponse,
            "description": "The answer; with `stream`, server-sent `ChatCompletionChunk`s.",
        }
    },
)
async def chat_completions(
    request: Request, user: ChatUser, body: ChatCompletionRequest, chat: Chat
) -> Response:
    """OpenAI chat completions; `model` names a domain, an adapter or the base model."""
    request_id = new_request_id()
    prepared = await chat.prepare(body, request_id, principal=user.name)
    headers = {"x-request-id": request_id}
    if body.stream:
        return StreamingResponse(
            chat.stream(prepared),
            media_type="text/event-stream",
            headers={**headers, "cache-control": "no-cache"},
        )
    try:
        answer = await unless_disconnected(request, chat.complete(prepared))
    except ClientDisconnected:
        return Response(status_code=CLIENT_CLOSED)
    return JSONResponse(answer.model_dump(), headers=headers)


@router.post("/completions", response_model=CompletionResponse)
async def completions(
    request: Request, user: ChatUser, body: CompletionRequest, chat: Chat
) -> Response:
    """OpenAI text completions: the prompt goes to the model as it is (no template, no
    retrieval); `model` names the base model, an adapter or a domain (its adapter)."""
    prepared = prepare_completion(chat, body, new_request_id("cmpl"), principal=user.name)
    try:
        answer = await unless_disconnected(request, complete_text(chat, prepared))
    except ClientDisconnected:
        return Response(status_code=CLIENT_CLOSED)
    return JSONResponse(answer.model_dump(), headers={"x-request-id": prepared.request_id})


@router.get("/models", response_model=ModelList)
async def list_models(user: ChatUser, ctx: Context) -> Response:
    """The domains, the loaded adapters (with versions) and the base model.

    Ids are unique: an adapter that shares its name with a domain is listed only inside
    that domain's entry, since `model: <name>` routes to the domain.
    """
    created = int(time.time())

    def card(model_id: str, **lorag: object) -> ModelCard:
        return ModelCard(id=model_id, created=created, lorag=ModelMeta(**lorag))

    data = [card(ctx.base_model_id, kind="base", aliases=["base"])]
    for name in ctx.registry.names():
        if name in ctx.state.domains:
            continue  # the domain of that name is what `model: name` serves
        adapter = ctx.registry.current(name)
        data.append(card(name, kind="adapter", version=adapter.version if adapter else None))
    for name, domain in sorted(ctx.state.domains.items()):
        adapter = ctx.registry.current(domain.adapter) if domain.adapter else None
        data.append(
            card(
                name,
                kind="domain",
                adapter=domain.adapter,
                adapter_version=adapter.version if adapter else None,
                index=domain.index,
            )
        )
    return JSONResponse(ModelList(data=data).model_dump())


@router.post("/search", response_model=SearchResponse)
async def search(user: ChatUser, body: SearchRequest, ctx: Context) -> SearchResponse:
    """Search a domain's index (any index the retrieval store holds, by domain name)."""
    domain = ctx.state.domains.get(body.domain)
    k = body.k or (domain.k if domain else None) or ctx.retrieval_settings.k
    mode = body.mode or (domain.mode if domain else None) or ctx.retrieval_settings.mode
    if k > ctx.settings.limits.max_k:
        raise bad_request(f"k is {k}, over the limit of {ctx.settings.limits.max_k}", param="k")
    try:
        label = ctx.domain_label(body.domain)
        hits = await ctx.search.search(body.domain, body.query, k, mode, label=label)
    except (RetrievalError, ValueError) as err:
        raise retrieval_api_error(err) from err
    return SearchResponse(
        domain=body.domain,
        mode=mode,
        index_version=hits[0].index_version if hits else None,
        data=[SearchHit.model_validate(h) for h in hits],
    )
