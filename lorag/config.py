"""`lorag.yaml`: one typed section per package, environment overrides, usable defaults.

Precedence, highest first: `LORAG_*` environment variables (nested with `__`, e.g.
`LORAG_RETRIEVAL__QDRANT__URL`), the YAML file, the defaults. With no file at all the
defaults run everything offline under `./lorag-data`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from eval.settings import EvalSettings
from retrieval.settings import RetrievalSettings
from serving.settings import ServingSettings
from training.settings import ModelSettings, RaftSettings, TrainingSettings

DEFAULT_CONFIG_FILE = Path("lorag.yaml")


class ConfigError(ValueError):
    """The configuration file or environment holds something lorag cannot use."""


class LoragConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LORAG_",
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
    )

    model: ModelSettings = ModelSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    training: TrainingSettings = TrainingSettings()
    serving: ServingSettings = ServingSettings()
    eval: EvalSettings = EvalSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; the environment overrides it.
        return env_settings, init_settings

    def served_raft(
        self, domain: str, raft: RaftSettings | None = None
    ) -> tuple[RaftSettings, int, str | None]:
        """RAFT settings, k and search mode that lay `domain`'s training samples out as the
        server will prompt it: its k and mode, and its system prompt unless
        `training.raft.system_prompt` sets one."""
        raft = raft or self.training.raft
        spec = self.serving.domains.get(domain)
        k = (spec.k if spec is not None and spec.k else None) or self.retrieval.k
        if raft.system_prompt is None and spec is not None and spec.system_prompt:
            raft = raft.model_copy(update={"system_prompt": spec.system_prompt})
        return raft, k, spec.mode if spec is not None else None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file: {err.strerror}") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def _describe(err: ValidationError, origin: str) -> str:
    lines = [f"{origin}: invalid configuration"]
    for item in err.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {field}: unknown key")
        elif any("key" in str(part) or "secret" in str(part) for part in item["loc"]):
            lines.append(f"  {field}: {item['msg']} (value hidden)")
        else:
            lines.append(f"  {field}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def load_config(path: Path | None = None) -> LoragConfig:
    """Load `path`, else `$LORAG_CONFIG`, else `./lorag.yaml` if present, else defaults."""
    if path is None and os.environ.get("LORAG_CONFIG"):
        path = Path(os.environ["LORAG_CONFIG"])
    if path is None and DEFAULT_CONFIG_FILE.is_file():
        path = DEFAULT_CONFIG_FILE
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"{path}: config file not found")
    data = _read_yaml(Path(path)) if path is not None else {}
    origin = str(path) if path is not None else "environment"
    try:
        return LoragConfig(**data)
    except ValidationError as err:
        raise ConfigError(_describe(err, f"{origin} (with LORAG_* overrides)")) from err
