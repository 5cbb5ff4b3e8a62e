"""What every subcommand shares: the loaded config and the console."""

from __future__ import annotations

import typer
from rich.console import Console

from lorag.config import LoragConfig, load_config

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
