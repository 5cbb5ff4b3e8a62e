"""`lorag`: one command line, each subcommand a thin call into a library package."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from lorag.commands import common, config, demo, feedback, retrieval, serving, training
from lorag.commands import eval as eval_commands

app = typer.Typer(
    name="lorag",
    help="Fine-tune LoRA adapters, index documentation into Qdrant, and serve RAG chat.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="YAML config file [default: $LORAG_CONFIG, else ./lorag.yaml if present]",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    ctx.obj = {}


retrieval.register(app)
training.register(app)
serving.register(app)
feedback.register(app)
config.register(app)
demo.register(app)
eval_commands.register(app)

# Errors a user can act on: print the message, not a traceback (LORAG_DEBUG=1 shows it).
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    RuntimeError,
    ConnectionError,
    TimeoutError,
)


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except USER_ERRORS as err:
        if os.environ.get("LORAG_DEBUG"):
            raise
        common.err_console.print(f"[bold red]error:[/] {err}", highlight=False)
        sys.exit(1)
