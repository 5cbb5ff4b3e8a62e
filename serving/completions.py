"""`/v1/completions`: OpenAI's text completions, for prompts the client lays out itself.

A pretrained base model is asked best with a prompt of its own kind (a few-shot completion,
say), not through a chat template; this route passes such a prompt to the engine untouched.
It shares routing, adapter leases, limits and accounting with chat (`serving.chat`).
"""

from __future__ import annotations

from serving.chat import ChatService, PreparedChat, stop_strings, usage
from serving.errors import bad_request
from serving.protocol import (
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    LoragOptions,
)
from serving.routing import resolve_route


def _prompt_text(request: CompletionRequest) -> str:
    if isinstance(request.prompt, str):
        return request.prompt
    if len(request.prompt) != 1:
        raise bad_request("prompt: send exactly one prompt per request", param="prompt")
    return request.prompt[0]


def prepare_completion(
    chat: ChatService, request: CompletionRequest, request_id: str, principal: str = ""
) -> PreparedChat:
    """Route, tokenize and check a completion request as chat does, without retrieval."""
    ctx = chat.ctx
    limits = ctx.settings.limits
    if request.stream:
        raise bad_request(
            "stream: /v1/completions answers whole; stream with /v1/chat/completions",
            param="stream",
        )
    if request.n not in (None, 1):
        raise bad_request("only n=1 is supported", param="n")
    text = _prompt_text(request)
    if not text:
        raise bad_request("prompt: must not be empty", param="prompt")
    max_tokens = request.max_tokens or 16
    if max_tokens > limits.max_tokens:
        raise bad_request(
            f"max_tokens is {max_tokens}, over the limit of {limits.max_tokens}",
            param="max_tokens",
        )
    stops = stop_strings(request.stop)
    route = resolve_route(ctx, request.model, LoragOptions(retrieval=False))
    try:
        prompt_ids = list(ctx.tokenizer(text)["input_ids"])
    except (TypeError, ValueError) as err:
        raise bad_request(f"prompt: cannot be tokenized: {err}", param="prompt") from err
    if len(prompt_ids) + max_tokens > ctx.max_model_len:
        raise bad_request(
            f"the prompt has {len(prompt_ids)} tokens and {max_tokens} more were asked for, "
            f"over the model's context of {ctx.max_model_len}",
            param="prompt",
            code="context_length_exceeded",
        )
    return chat.prepared(request, request_id, route, prompt_ids, max_tokens, stops, principal)


async def complete_text(chat: ChatService, prepared: PreparedChat) -> CompletionResponse:
    """Generate and answer in OpenAI's `text_completion` shape (plus `lorag`: what served)."""
    result, version = await chat.generate(prepared)
    return CompletionResponse(
        **prepared.envelope(),
        choices=[
            CompletionChoice(
                index=0, text=result.text, finish_reason=result.finish_reason or "stop"
            )
        ],
        usage=usage(prepared, result),
        lorag=chat.served_by(prepared, version),
    )
