"""Request and response bodies of the HTTP API (OpenAI's shapes plus lorag's extensions)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer
from pydantic_core import PydanticCustomError

from retrieval.results import Hit
from retrieval.settings import SearchMode
from serving.settings import DOMAIN_PATTERN, NAME_PATTERN, DomainSpec

# Text checks ------------------------------------------------------------------------------


def first_unencodable(value: Any) -> tuple[str, int] | None:
    """Where `value` (a JSON value) holds text that UTF-8 cannot encode: (path, character).

    JSON may escape a lone UTF-16 surrogate (`"\\ud800"`); Python decodes it into a `str`
    that the tokenizer, the stores and the response encoder all fail on later. Walks
    iteratively, so a deeply nested body cannot exhaust the stack.
    """
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            position = _surrogate_at(item)
            if position is not None:
                return path, position
        elif isinstance(item, dict):
            for key in item:
                if isinstance(key, str) and (position := _surrogate_at(key)) is not None:
                    return _join(path, "<key>"), position
            stack.extend((_join(path, str(k)), c) for k, c in reversed(list(item.items())))
        elif isinstance(item, list | tuple):
            stack.extend((_join(path, str(n)), c) for n, c in reversed(list(enumerate(item))))
    return None


def _surrogate_at(text: str) -> int | None:
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return err.start
    return None


def _join(path: str, part: str) -> str:
    return f"{path}.{part}" if path else part


class RequestModel(BaseModel):
    """A request body: every field's text must be encodable as UTF-8 (checked once, here).

    The error's `path` context extends the field's location down to the bad string, so
    the 400 names it (`messages.0.content`); see `serving.errors`.
    """

    @field_validator("*", mode="before")
    @classmethod
    def _utf8_text(cls, value: Any) -> Any:
        found = first_unencodable(value)
        if found is not None:
            path, position = found
            raise PydanticCustomError(
                "invalid_utf8",
                "not valid UTF-8 text: a lone UTF-16 surrogate at character {position}; "
                "send UTF-8 text (a JSON \\u escape of a surrogate must be a high+low pair)",
                {"position": position, "path": path},
            )
        return value


# OpenAI chat ------------------------------------------------------------------------------


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class LoragOptions(BaseModel):
    """The `lorag` request extension (sent with the openai client as `extra_body`).

    `retrieval` and `adapter` switch the domain's index and adapter on or off for one
    request (unset: the domain's own setup); `k` and `mode` override its retrieval settings.
    """

    model_config = ConfigDict(extra="forbid")

    retrieval: bool | None = None
    k: int | None = Field(None, ge=1)
    mode: SearchMode | None = None
    adapter: bool | None = None


class ChatCompletionRequest(RequestModel):
    # Unknown OpenAI parameters are ignored, as vLLM's server does; lorag's own are strict.
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)  # what an engine's RNG takes
    n: int | None = Field(None, ge=1)
    user: str | None = None
    lorag: LoragOptions | None = None


class Source(BaseModel):
    index: int  # the [n] the prompt gave this passage
    doc_id: str
    source: str
    heading: str
    score: float
    text: str

    @classmethod
    def numbered(cls, hits: list[Hit]) -> list[Source]:
        """The passages of a prompt, numbered as the prompt numbers them (from 1)."""
        return [cls.model_validate(vars(h) | {"index": n}) for n, h in enumerate(hits, start=1)]


class ServedBy(BaseModel):
    """The `lorag` response extension: what served the request (the audit trail's fields)."""

    domain: str | None
    adapter: str | None
    adapter_version: int | None
    index_version: str | None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


class _Sparse(BaseModel):
    """A body whose `OPTIONAL` fields appear on the wire only when set, as OpenAI's do."""

    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        for name in self.OPTIONAL:
            if name not in self.model_fields_set:
                data.pop(name, None)
        return data


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class _Reply(BaseModel):
    """What every completion body and chunk starts with (`object` names the kind)."""

    id: str
    object: str
    created: int
    model: str


class ChatCompletionResponse(_Reply):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage
    sources: list[Source]
    lorag: ServedBy


class Delta(_Sparse):
    """What a stream chunk adds: the role first, then content pieces, then nothing."""

    OPTIONAL = ("role", "content")
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(_Sparse, _Reply):
    """One server-sent event of a streamed chat completion. `usage` is null on each chunk
    when the client asked for usage (and set on the last one, with no choices); the last
    choice chunk carries the lorag extensions."""

    OPTIONAL = ("usage", "sources", "lorag")
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChunkChoice]
    usage: Usage | None = None
    sources: list[Source] | None = None
    lorag: ServedBy | None = None


class ModelMeta(_Sparse):
    """The `lorag` extension of a model entry: what the id routes to."""

    OPTIONAL = ("aliases", "version", "adapter", "adapter_version", "index")
    kind: Literal["base", "adapter", "domain"]
    aliases: list[str] | None = None
    version: int | None = None  # an adapter's
    adapter: str | None = None  # a domain's, with its version
    adapter_version: int | None = None
    index: bool | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "lorag"
    lorag: ModelMeta


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# OpenAI (legacy) completions: raw text in, text out -----------------------------------------


class CompletionRequest(RequestModel):
    """`/v1/completions`: a prompt the server does not touch (no template, no retrieval).

    How a pretrained base model is asked in its own terms (eval's few-shot baseline uses
    it); `model` names the base model, an adapter or a domain (its adapter, no retrieval).
    """

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    prompt: str | list[str] = Field(description="one prompt (a list must hold exactly one)")
    max_tokens: int | None = Field(16, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    n: int | None = Field(None, ge=1)
    stream: bool = False
    user: str | None = None


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str
    logprobs: None = None


class CompletionResponse(_Reply):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: Usage
    lorag: ServedBy


# Search -----------------------------------------------------------------------------------


class SearchRequest(RequestModel):
    model_config = ConfigDict(extra="forbid")

    domain: str = Field(pattern=DOMAIN_PATTERN)
    query: str = Field(min_length=1)
    k: int | None = Field(None, ge=1)
    mode: SearchMode | None = None


class SearchHit(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # from a `retrieval.Hit`

    doc_id: str
    source: str
    heading: str
    chunk_index: int
    score: float
    text: str


class SearchResponse(BaseModel):
    object: Literal["list"] = "list"
    domain: str
    mode: SearchMode
    index_version: str | None
    data: list[SearchHit]


# Admin ------------------------------------------------------------------------------------


class AdapterLoadRequest(RequestModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    path: str = Field(min_length=1, description="folder relative to serving.adapters_root")


class AdapterInfo(BaseModel):
    name: str
    version: int
    path: str
    in_flight: int
    draining_versions: list[int] = Field(default_factory=list)


class AdapterLoadResponse(AdapterInfo):
    replaced_version: int | None = None


class DomainCreate(DomainSpec, RequestModel):
    name: str = Field(pattern=DOMAIN_PATTERN)


class DomainUpdate(RequestModel):
    """Fields to change; unset fields keep their value, `null` clears an optional one."""

    model_config = ConfigDict(extra="forbid")

    adapter: str | None = Field(None, pattern=NAME_PATTERN)
    index: bool | None = None
    system_prompt: str | None = None
    k: int | None = Field(None, ge=1, le=100)
    mode: SearchMode | None = None


class DomainInfo(DomainSpec):
    name: str
    documents: int
    adapter_loaded: bool


class DocumentInfo(BaseModel):
    path: str
    bytes: int
    sha256: str | None = None


class JobInfo(BaseModel):
    id: str
    kind: Literal["reindex"]
    domain: str
    status: Literal["queued", "running", "succeeded", "failed"]
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    result: dict[str, Any] | None = None


class ListOf(BaseModel):
    object: Literal["list"] = "list"
    data: list[Any]
