"""Request and response bodies of the HTTP API (OpenAI's shapes plus lorag's extensions)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from retrieval.settings import SearchMode
from serving.settings import DOMAIN_PATTERN, NAME_PATTERN, DomainSpec

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


class ChatCompletionRequest(BaseModel):
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
    seed: int | None = None
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


# OpenAI (legacy) completions: raw text in, text out -----------------------------------------


class CompletionRequest(BaseModel):
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
    seed: int | None = None
    n: int | None = Field(None, ge=1)
    stream: bool = False
    user: str | None = None


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str
    logprobs: None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    lorag: ServedBy


# Search -----------------------------------------------------------------------------------


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    domain: str = Field(pattern=DOMAIN_PATTERN)
    query: str = Field(min_length=1)
    k: int | None = Field(None, ge=1)
    mode: SearchMode | None = None


class SearchHit(BaseModel):
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


class AdapterLoadRequest(BaseModel):
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


class DomainCreate(DomainSpec):
    name: str = Field(pattern=DOMAIN_PATTERN)


class DomainUpdate(BaseModel):
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
