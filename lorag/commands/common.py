"""What every subcommand shares: the loaded config and the console."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from lorag.config import LoragConfig, load_config
from training.settings import ModelSettings

console = Console()
err_console = Console(stderr=True)


def config_of(ctx: typer.Context) -> LoragConfig:
    """The config named by the global `--config` option (loaded once per invocation)."""
    root = ctx.find_root()
    if root.obj is None:
        root.obj = {}
    if "config" not in root.obj:
        root.obj["config"] = load_config(root.params.get("config"))
    return root.obj["config"]


def resolve_base(
    model: ModelSettings, name: str | None = None, on: Console | None = None
) -> tuple[str, Path]:
    """`(name, local folder)` of the base model (`name`, else `model.base_model`), with a
    status line that warns when Gemma 3 270M is converted on first use."""
    from training.base_models import GEMMA_270M, resolve_base_model

    name = name or model.base_model
    cached = (Path(model.cache_dir) / GEMMA_270M / "config.json").is_file()
    note = " (first use: converting the GGUF, about 3 minutes)" if (
        name == GEMMA_270M and not cached
    ) else ""
    with (on or console).status(f"Resolving base model {name}{note}"):
        return name, resolve_base_model(name, Path(model.cache_dir), model.dtype)
