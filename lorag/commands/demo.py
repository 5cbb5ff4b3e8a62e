"""`lorag demo`: the quickstart, the whole product offline on a real model (see lorag/demo/)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lorag.commands import common


def register(app: typer.Typer) -> None:
    """Add `lorag demo` to the root app."""
    app.command("demo")(demo_command)


def demo_command(
    demo_file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help="Demo file: a `demo:` section plus lorag config sections "
            "(default: examples/demo.yaml)",
            dir_okay=False,
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Folder for everything the demo writes, recreated on each run "
            "(default: demo.data_dir, lorag-data/demo)"
        ),
    ] = None,
) -> None:
    """Run the whole product offline: index two example domains, train an adapter for each,
    serve them with vLLM, ask questions over HTTP, replace an adapter under load, evaluate.

    The demo reads its own file (the global --config is not used) and prints where its
    reports are. About 10 minutes on 2 CPU cores after `make install`.
    """
    from lorag.demo.run import run_demo

    run_demo(demo_file, data_dir=data_dir, console=common.console)
