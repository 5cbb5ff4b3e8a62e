"""The `demo:` section of a demo file: the base model, the domains and each stage's budget."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class DemoError(RuntimeError):
    """The demo cannot run or a stage failed; the message says what to do."""


def _all_configurations() -> list[str]:
    from eval.answers import CONFIGURATIONS

    return list(CONFIGURATIONS)


class AskSettings(BaseModel):
    """Stage 5: the first `questions` held-out questions of each domain."""

    model_config = ConfigDict(extra="forbid")

    questions: int = Field(2, ge=0, le=20)
    max_tokens: int = Field(48, ge=1)


class ReplaceSettings(BaseModel):
    """Stage 6: requests keep `concurrency` in flight while the adapter is replaced."""

    model_config = ConfigDict(extra="forbid")

    domain: str | None = Field(None, description="default: the first domain")
    concurrency: int = Field(4, ge=1, le=64)
    requests_after_swap: int = Field(
        4, ge=1, description="requests started after the swap to wait for before stopping"
    )
    max_requests: int = Field(64, ge=2, description="a bound on the stage's requests")
    max_tokens: int = Field(24, ge=1)


class EvalBudget(BaseModel):
    """Stage 7: the held-out questions of each domain (all, or the first `questions`), per
    configuration; few-shot configurations draw their examples from the training questions."""

    model_config = ConfigDict(extra="forbid")

    questions: int | None = Field(None, ge=1, description="per domain; null: all of them")
    configs: list[str] = Field(
        default_factory=_all_configurations,
        min_length=1,
        description="base, base+rag, adapter, adapter+rag, base+rag+Nshot",
    )
    max_tokens: int = Field(32, ge=1)
    concurrency: int = Field(8, ge=1, le=64)

    @field_validator("configs")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        from eval.answers import parse_configurations

        parse_configurations(",".join(value))  # raises with the known names
        return value


class DemoSettings(BaseModel):
    """The `demo:` section of a demo file. Request timeouts are `eval.request_timeout_s`."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(
        "gemma-3-270m", description="gemma-3-270m (offline default) or a local model folder"
    )
    model_cache_dir: Path = Path("lorag-data/models")
    dtype: Literal["float32", "bfloat16"] = "float32"
    data_dir: Path = Field(Path("lorag-data/demo"), description="recreated on each run")
    domains: list[str] = Field(
        default_factory=lambda: ["acme-router", "northwind-policies"],
        min_length=1,
        description="domain folders (domain.yaml, docs/, qa/), relative to the demo file",
    )
    port: int = Field(0, ge=0, le=65535, description="0: a free port")
    server_start_timeout_s: float = Field(900.0, gt=0)
    ask: AskSettings = AskSettings()
    replace: ReplaceSettings = ReplaceSettings()
    eval: EvalBudget = EvalBudget()

    @field_validator("domains")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a domain is listed twice")
        return value
