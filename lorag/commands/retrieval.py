"""`lorag index`, `lorag search`, `lorag domains`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the retrieval subcommands to the root app."""
