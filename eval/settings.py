"""Settings of the eval package: where reports go, which k values, how hard to push a server."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


class JudgeSettings(BaseModel):
    """An optional LLM judge: any OpenAI-compatible chat endpoint. Off by default."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="grade answers with the judge model")
    base_url: str | None = Field(None, description="e.g. http://127.0.0.1:8001/v1")
    model: str | None = Field(None, description="the judge's model id at base_url")
    api_key: SecretStr | None = None
    timeout_s: float = Field(60.0, gt=0, description="per judge request")
    max_tokens: int = Field(8, ge=1, le=256, description="the judge replies with a grade")

    @model_validator(mode="after")
    def _endpoint_when_enabled(self) -> JudgeSettings:
        if self.enabled and not (self.base_url and self.model):
            raise ValueError("an enabled judge needs base_url and model")
        return self


class PerplexitySettings(BaseModel):
    """Sliding-window perplexity: windows of `max_length` tokens, moved by `stride`."""

    model_config = ConfigDict(extra="forbid")

    max_length: int = Field(512, ge=8, description="tokens per window")
    stride: int = Field(256, ge=1, description="tokens the window moves by; each is scored once")

    @model_validator(mode="after")
    def _stride_within_window(self) -> PerplexitySettings:
        if self.stride >= self.max_length:
            raise ValueError("stride must be smaller than max_length")
        return self


class LoadSettings(BaseModel):
    """Defaults of `lorag eval load`; a run stops at whichever bound it reaches first."""

    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(4, ge=1, le=256, description="requests kept in flight")
    duration_s: float = Field(30.0, gt=0, le=24 * 3600, description="how long to send requests")
    max_requests: int = Field(10_000, ge=1, description="requests sent, at most")
    max_tokens: int = Field(64, ge=1, description="tokens generated per request")
    prompt: str = Field(
        "Summarise what this service does in two sentences.",
        min_length=1,
        description="the user message of every request",
    )


class EvalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    report_dir: Path = Field(Path("reports"), description="each run writes a folder here")
    # recall@k and answer-in-context@k are reported at each of these; MRR and nDCG at rank_k.
    k_values: list[int] = Field(default_factory=lambda: [1, 5, 10], min_length=1)
    rank_k: int = Field(10, ge=1, le=100)
    # Retrieval eval fetches this many chunks per k so that doc-level dedup still fills k docs.
    fetch_factor: int = Field(3, ge=1, le=10)
    server_url: str = Field("http://127.0.0.1:8000", description="the lorag server to evaluate")
    api_key: SecretStr | None = None
    admin_api_key: SecretStr | None = None
    # Answers eval: chunks the server retrieves for the RAG configurations (None: its default).
    k: int | None = Field(None, ge=1, le=100)
    max_tokens: int = Field(128, ge=1, description="answers eval: tokens generated per answer")
    concurrency: int = Field(4, ge=1, le=64, description="answers eval: requests in flight")
    request_timeout_s: float = Field(300.0, gt=0, description="per request")
    judge: JudgeSettings = JudgeSettings()
    perplexity: PerplexitySettings = PerplexitySettings()
    load: LoadSettings = LoadSettings()

    @field_validator("k_values")
    @classmethod
    def _positive_sorted(cls, values: list[int]) -> list[int]:
        if any(k < 1 or k > 100 for k in values):
            raise ValueError("every k must be between 1 and 100")
        return sorted(set(values))
