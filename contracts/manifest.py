"""The adapter manifest: the contract between training (which writes it) and serving (which
checks it before it serves an adapter).

It lives in `contracts`, which imports nothing of lorag, so that training and serving both
read it without loading each other's engines or retrieval's Qdrant client. A manifest pins
the base model by fingerprint (its config and weight bytes) and the prompt format the
adapter was trained with, so a server never applies an adapter to a model or a prompt it
was not trained for.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

MANIFEST_FILE = "lorag-adapter.json"

# Config keys that change with how a checkpoint was saved, not with what the model computes.
_VOLATILE_CONFIG_KEYS = {"_name_or_path", "transformers_version", "torch_dtype", "dtype"}
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin")


class AdapterCompatibilityError(ValueError):
    """An adapter cannot be used with this base model or prompt format."""


class DataFile(BaseModel):
    path: str
    sha256: str
    records: int


class AdapterManifest(BaseModel):
    """What `lorag-adapter.json` holds."""

    name: str
    domain: str | None = None
    base_model: str
    base_fingerprint: str
    prompt_format: str
    lora: dict[str, Any] = Field(default_factory=dict)
    data: list[DataFile] = Field(default_factory=list)
    metrics: dict[str, Any] = Field(default_factory=dict)
    lorag_version: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def save(self, adapter_dir: Path) -> Path:
        path = Path(adapter_dir) / MANIFEST_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path

    @classmethod
    def load(cls, adapter_dir: Path) -> AdapterManifest:
        """Read an adapter folder's manifest, with an error that names the file."""
        path = Path(adapter_dir) / MANIFEST_FILE
        if not path.is_file():
            raise AdapterCompatibilityError(
                f"{path}: no adapter manifest; adapters must be produced by `lorag train`"
            )
        try:
            return cls.model_validate_json(path.read_text())
        except ValidationError as err:
            raise AdapterCompatibilityError(f"{path}: invalid manifest: {err}") from err

    def check_base(self, fingerprint: str, base_model: str = "") -> None:
        """Refuse a base model other than the one the adapter was trained on."""
        if fingerprint != self.base_fingerprint:
            served = f" ({base_model})" if base_model else ""
            raise AdapterCompatibilityError(
                f"adapter {self.name!r} was trained on base model {self.base_model!r} "
                f"(fingerprint {self.base_fingerprint[:12]}), but the base model here{served} "
                f"has fingerprint {fingerprint[:12]}; retrain it on this base model"
            )


def fingerprint_model(model_dir: Path) -> str:
    """A sha256 over a checkpoint folder's config (less save-time keys) and weight files."""
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: not a model folder (no config.json)")
    config = json.loads(config_path.read_text())
    for key in _VOLATILE_CONFIG_KEYS:
        config.pop(key, None)
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    weights = sorted({p for pattern in _WEIGHT_PATTERNS for p in model_dir.glob(pattern)})
    if not weights:
        raise FileNotFoundError(f"{model_dir}: no weight files (*.safetensors or *.bin)")
    for weight in weights:
        digest.update(weight.name.encode())
        with weight.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()
