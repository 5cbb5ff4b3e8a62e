"""Shared fixtures of the eval tests: a tiny model, random adapters, the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.adapters import make_random_adapter
from tests.support.tiny_models import build_tiny_model

DOMAIN_TEXT = [
    "The refund policy gives every customer thirty days to return a product.",
    "Shipping takes five days and support answers a ticket within two hours.",
]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama with a trained tokenizer (float32), built once per session."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", extra_text=DOMAIN_TEXT)


@pytest.fixture(scope="session")
def tiny_adapters(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two random LoRA adapters for the tiny model, with lorag manifests."""
    root = tmp_path_factory.mktemp("adapters")
    return [make_random_adapter(tiny_model, root / f"shop-v{n}", seed=n) for n in (1, 2)]


