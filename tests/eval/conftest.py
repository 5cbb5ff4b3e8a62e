"""Shared fixtures of the eval tests: a tiny model, random adapters, the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest
import typer

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


def cli_app() -> typer.Typer:
    """The `lorag` app with `eval` registered (the real one once lorag/cli.py registers it)."""
    from lorag import cli
    from lorag.commands import eval as eval_commands

    if any(group.name == "eval" for group in cli.app.registered_groups):
        return cli.app
    app = typer.Typer(pretty_exceptions_enable=False)

    @app.callback()
    def _root(
        ctx: typer.Context,
        config: Annotated[Path | None, typer.Option("--config", "-c", dir_okay=False)] = None,
    ) -> None:
        ctx.obj = {}

    eval_commands.register(app)
    return app
