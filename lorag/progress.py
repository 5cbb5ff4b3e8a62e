"""Progress displays the CLI commands and the demo share."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

INDEX_STAGES = {"scan": "reading files", "chunk": "chunking", "embed": "embedding and storing"}


@contextlib.contextmanager
def index_progress(console: Console, label: str = "") -> Iterator[Callable[[str, int, int], None]]:
    """A `Retriever.index` progress callback showing one bar per stage, `label` first."""
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                text = INDEX_STAGES.get(stage, stage)
                tasks[stage] = bar.add_task(f"{label}: {text}" if label else text, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield progress


def count_progress(console: Console) -> Progress:
    """A transient bar counting requests (`n/N`, elapsed time): the evals and the demo."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    return Progress(*columns, console=console, transient=True)
