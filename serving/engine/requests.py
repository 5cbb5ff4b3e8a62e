"""What both engines do alike around a request: check it before, join its chunks after."""

from __future__ import annotations

from collections.abc import AsyncIterator

from serving.engine.base import GenerationChunk, SamplingOptions
from serving.engine.errors import InvalidRequestError


def completion_budget(
    prompt_token_ids: list[int], options: SamplingOptions, max_model_len: int
) -> int:
    """The number of tokens to generate at most: `max_tokens`, cut to fit `max_model_len`.

    Raises `InvalidRequestError` for an empty prompt, a prompt that leaves no room for a
    completion, or sampling options out of range.
    """
    if not prompt_token_ids:
        raise InvalidRequestError("the prompt is empty")
    if options.max_tokens < 1:
        raise InvalidRequestError(f"max_tokens must be at least 1 (got {options.max_tokens})")
    if options.temperature < 0:
        raise InvalidRequestError(f"temperature must be >= 0 (got {options.temperature})")
    if not 0 < options.top_p <= 1:
        raise InvalidRequestError(f"top_p must be in (0, 1] (got {options.top_p})")
    if any(not stop for stop in options.stop):
        raise InvalidRequestError("stop strings must not be empty")
    room = max_model_len - len(prompt_token_ids)
    if room < 1:
        raise InvalidRequestError(
            f"the prompt has {len(prompt_token_ids)} tokens, but the engine serves at most "
            f"{max_model_len} tokens per request including the completion "
            "(serving.engine.max_model_len); shorten the conversation or the context"
        )
    return min(options.max_tokens, room)


async def collect(chunks: AsyncIterator[GenerationChunk]) -> GenerationChunk:
    """Join a stream of chunks into one: all text and tokens, the last finish and counts."""
    texts: list[str] = []
    token_ids: list[int] = []
    last = GenerationChunk(text="")
    async for chunk in chunks:
        texts.append(chunk.text)
        token_ids.extend(chunk.token_ids)
        last = chunk
    return GenerationChunk(
        text="".join(texts),
        token_ids=token_ids,
        finish_reason=last.finish_reason,
        prompt_tokens=last.prompt_tokens,
        completion_tokens=last.completion_tokens,
    )
