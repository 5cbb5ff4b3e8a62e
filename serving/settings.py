"""Settings of the serving package: the `serving:` section of `lorag.yaml`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from retrieval.settings import SearchMode
from serving.engine.settings import EngineSettings

Scope = Literal["chat", "admin"]
StateStoreKind = Literal["auto", "file", "qdrant"]

# Adapter names: used in URLs, metric labels and model ids.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# Domain names are also index names, so they follow retrieval's rule
# (retrieval.store.DOMAIN_PATTERN; a test keeps the two equal).
DOMAIN_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
BASE_ALIAS = "base"


class ApiKey(BaseModel):
    """A bearer key and what it may do: `chat` (chat, models, search) and/or `admin`.

    `admin` implies `chat`.
    """

    model_config = ConfigDict(extra="forbid")

    key: SecretStr
    scopes: list[Scope] = Field(default_factory=lambda: ["chat"], min_length=1)
    name: str = Field("", description="shown in logs instead of the key")

    @field_validator("key")
    @classmethod
    def _long_enough(cls, key: SecretStr) -> SecretStr:
        if len(key.get_secret_value()) < 8:
            raise ValueError("an API key must be at least 8 characters long")
        return key


class LimitSettings(BaseModel):
    """What one request may ask for; beyond these the server answers 400 or 413."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(1 << 20, ge=1024, description="JSON request body size, at most")
    max_upload_bytes: int = Field(
        20 << 20, ge=1024, description="document upload size (re-indexing over HTTP), at most"
    )
    max_messages: int = Field(64, ge=1, description="messages in one chat request, at most")
    max_tokens: int = Field(2048, ge=1, description="max_tokens a request may ask for")
    max_k: int = Field(20, ge=1, le=100, description="retrieved passages a request may ask for")
    adapter_capacity_wait_s: float = Field(
        30.0, ge=0, description="how long a load waits for a replaced version to drain"
    )


class SamplingDefaults(BaseModel):
    """Sampling used when a request does not say."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(256, ge=1, description="tokens generated per reply, at most")
    temperature: float = Field(0.0, ge=0, le=2, description="0: greedy (reproducible)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")


class DomainSpec(BaseModel):
    """A domain: an optional adapter, an optional index, a system prompt, retrieval settings.

    `k` and `mode` default to the `retrieval:` section's when unset. The index of a domain
    is the retrieval index of the same name.
    """

    model_config = ConfigDict(extra="forbid")

    adapter: str | None = Field(
        None, pattern=NAME_PATTERN, description="the adapter's name; null: the base model"
    )
    index: bool = Field(False, description="retrieve context from the index of the same name")
    system_prompt: str | None = Field(None, description="put first in every conversation")
    k: int | None = Field(None, ge=1, le=100, description="passages retrieved per question")
    mode: SearchMode | None = Field(None, description="hybrid, dense or sparse search")


class FeedbackSettings(BaseModel):
    """Recording chat exchanges for `POST /v1/feedback` and `lorag feedback export`.

    Each replica appends to `<data_dir>/feedback/<replica>.jsonl` (see `serving.feedback`).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True, description="record each completed chat exchange so it can receive feedback"
    )
    replica: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
        description="name of this replica's feedback file (default: the host name)",
    )
    max_exchanges: int = Field(
        20_000,
        ge=10,
        description="exchanges kept per replica; beyond it the oldest unrated go first",
    )
    retention_days: float | None = Field(
        90.0, gt=0, description="exchanges and their feedback older than this are dropped"
    )


class ServingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0: every interface)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to listen on")
    served_model_name: str | None = Field(
        None, description="id of the base model in the API (default: its folder name)"
    )
    api_keys: list[ApiKey] = Field(
        default_factory=list, description="no keys: the API is open (a warning is logged)"
    )
    adapters_root: Path = Field(
        Path("lorag-data/adapters"), description="the only folder adapters are loaded from"
    )
    data_dir: Path = Field(
        Path("lorag-data/serving"), description="state file, uploaded documents and feedback"
    )
    state_store: StateStoreKind = Field(
        "auto",
        description="auto: a Qdrant collection when retrieval.qdrant.url is set, else a file",
    )
    state_collection: str = Field(
        "lorag_serving_state",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Qdrant collection of the shared state (state_store: qdrant)",
    )
    sync_interval_s: float = Field(5.0, gt=0, description="how often replicas re-read the state")
    shutdown_grace_s: float = Field(
        3.0,
        ge=0,
        le=300,
        description="on SIGINT/SIGTERM: how long running requests may finish before they are "
        "aborted (a re-index stops at its next step and resumes on the next run)",
    )
    limits: LimitSettings = LimitSettings()
    sampling: SamplingDefaults = SamplingDefaults()
    engine: EngineSettings = EngineSettings()
    feedback: FeedbackSettings = FeedbackSettings()
    domains: dict[str, DomainSpec] = Field(
        default_factory=dict, description="domains created at start-up unless the state has them"
    )
    adapters: dict[str, str] = Field(
        default_factory=dict,
        description="adapters (name: path under adapters_root) loaded at start-up unless the "
        "state has them",
    )

    @field_validator("domains")
    @classmethod
    def _valid_domain_names(cls, value: dict) -> dict:
        for name in value:
            if not re.match(DOMAIN_PATTERN, name) or name == BASE_ALIAS:
                raise ValueError(
                    f"{name!r} is not a valid domain name (lowercase letters, digits, _ -)"
                )
        return value

    @field_validator("adapters")
    @classmethod
    def _valid_adapter_names(cls, value: dict) -> dict:
        for name in value:
            if not re.match(NAME_PATTERN, name) or name == BASE_ALIAS:
                raise ValueError(f"{name!r} is not a valid adapter name (letters, digits, . _ -)")
        return value
