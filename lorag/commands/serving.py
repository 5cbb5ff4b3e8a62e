"""`lorag serve`: the OpenAI-compatible server (settings: the `serving:` config section)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from lorag.commands.common import config_of, console, resolve_base


def register(app: typer.Typer) -> None:
    """Add `lorag serve` to the root app."""
    app.command("serve")(serve_command)


def serve_argv(config_file: Path, base_model: Path | str) -> list[str]:
    """The command line of `lorag --config FILE serve --base-model M` for this interpreter
    (how the demo, the tests and the benchmarks start a server process)."""
    args = ["--config", str(config_file), "serve", "--base-model", str(base_model)]
    return [sys.executable, "-m", "lorag", *args]


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging plus lorag's: server messages on stderr, one JSON audit line per
    chat request on stdout."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["lorag"] = {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    config["formatters"]["audit"] = {"format": "%(message)s"}
    config["handlers"]["lorag"] = {
        "class": "logging.StreamHandler",
        "formatter": "lorag",
        "stream": "ext://sys.stderr",
    }
    config["handlers"]["audit"] = {
        "class": "logging.StreamHandler",
        "formatter": "audit",
        "stream": "ext://sys.stdout",
    }
    config["loggers"]["lorag"] = {"handlers": ["lorag"], "level": level.upper(), "propagate": False}
    config["loggers"]["lorag.audit"] = {
        "handlers": ["audit"],
        "level": "INFO",
        "propagate": False,
    }
    return config


def serve_command(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Interface to bind (default: serving.host from the config)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: serving.port from the config)")] = None,
    base_model: Annotated[
        str | None,
        typer.Option("--base-model", help="Model id or folder (default: model.base_model from the config)"),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
) -> None:
    """Serve OpenAI-compatible RAG chat with per-domain adapters (vLLM engine by default).

    Adapters load from `serving.adapters_root`; domains, documents and adapter versions are
    managed over the admin API and persist in `serving.data_dir` (or Qdrant, in server mode).
    """
    import uvicorn

    from serving.app import create_app

    config = config_of(ctx)
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = config.serving.model_copy(update=overrides)
    _, model_path = resolve_base(config.model, base_model)
    app = create_app(
        settings, config.retrieval, model_path, prompt_layout=config.model.prompt_layout
    )
    console.print(
        f"Serving [bold]{settings.served_model_name or model_path.name}[/] with the "
        f"{settings.engine.kind} engine at http://{settings.host}:{settings.port} "
        f"(OpenAI base URL http://{settings.host}:{settings.port}/v1); starting the engine…",
        highlight=False,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=log_config(log_level),
        log_level=log_level,
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )
