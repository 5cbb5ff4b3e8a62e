"""`lorag index`, `lorag search`, `lorag domains`."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lorag.commands import common
from lorag.progress import index_progress


def index_command(
    ctx: typer.Context,
    domain: Annotated[str, typer.Argument(help="Domain name, e.g. product-docs")],
    path: Annotated[Path, typer.Argument(help="Folder of documents (md, txt, html, pdf)")],
    rebuild: Annotated[
        bool,
        typer.Option(
            "--rebuild",
            help="Build a new index aside and switch to it when complete (needed after "
            "changing the embedding model or chunking)",
        ),
    ] = False,
) -> None:
    """Index a folder into a domain: adds new, replaces changed and deletes removed documents."""
    from retrieval import Retriever

    config = common.config_of(ctx)
    with Retriever(config.retrieval) as retriever, index_progress(common.err_console) as progress:
        report = retriever.index(domain, path, rebuild=rebuild, progress=progress)
    summary = Table(title=f"Indexed {path} into domain {domain!r}", show_header=False)
    summary.add_column(style="bold")
    summary.add_column()
    rows = [
        ("added", len(report.added)),
        ("updated", len(report.updated)),
        ("deleted", len(report.deleted)),
        ("unchanged", len(report.unchanged)),
        ("skipped", len(report.skipped)),
        ("chunks embedded", report.chunks_embedded),
        ("documents / chunks in index", f"{report.documents_total} / {report.chunks_total}"),
        ("index version", report.index_version),
        ("seconds", f"{report.seconds:.1f}"),
    ]
    if report.rebuilt:
        rows.insert(0, ("rebuilt", "yes: new collection, alias switched"))
    for name, value in rows:
        summary.add_row(name, str(value))
    common.console.print(summary)
    if report.skipped:
        skipped = Table(title="Skipped files")
        skipped.add_column("file")
        skipped.add_column("reason")
        for item in report.skipped:
            note = " (previous version kept)" if item.kept_previous else ""
            skipped.add_row(item.path, item.reason + note)
        common.console.print(skipped)


def search_command(
    ctx: typer.Context,
    domain: Annotated[str, typer.Argument(help="Domain to search")],
    query: Annotated[str, typer.Argument(help="What to look for")],
    k: Annotated[
        int | None, typer.Option("-k", "--k", min=1, max=1000, help="Number of hits")
    ] = None,
    mode: Annotated[
        str | None, typer.Option("--mode", help="hybrid, dense or sparse [default: config]")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the hits as JSON")] = False,
) -> None:
    """Search a domain's index."""
    from retrieval import Retriever

    config = common.config_of(ctx)
    if mode is not None and mode not in ("hybrid", "dense", "sparse"):
        raise typer.BadParameter("use hybrid, dense or sparse", param_hint="--mode")
    with Retriever(config.retrieval) as retriever:
        hits = retriever.search(domain, query, k=k, mode=mode)  # type: ignore[arg-type]
    if as_json:
        fields = ("doc_id", "source", "heading", "chunk_index", "score", "text")
        typer.echo(json.dumps([{f: asdict(hit)[f] for f in fields} for hit in hits], indent=2))
        return
    if not hits:
        common.console.print("no hits")
        return
    table = Table(title=f"{domain}: {query}")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("source")
    table.add_column("text")
    for rank, hit in enumerate(hits, start=1):
        where = hit.source + (f"\n[dim]{hit.heading}[/]" if hit.heading else "")
        text = " ".join(hit.text.split())
        table.add_row(
            str(rank), f"{hit.score:.3f}", where, text[:300] + ("…" if len(text) > 300 else "")
        )
    common.console.print(table)


def domains_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON")] = False,
) -> None:
    """List the indexed domains."""
    from retrieval import Retriever

    config = common.config_of(ctx)
    with Retriever(config.retrieval) as retriever:
        domains = retriever.domains()
    if as_json:
        typer.echo(json.dumps([asdict(info) for info in domains], indent=2))
        return
    if not domains:
        common.console.print("no domains indexed yet; create one with `lorag index DOMAIN PATH`")
        return
    table = Table(title="Domains")
    for column in ("domain", "documents", "chunks", "embedding model", "index version"):
        table.add_column(column)
    for info in domains:
        table.add_row(
            info.name,
            str(info.documents),
            str(info.chunks),
            info.embedding_model,
            info.index_version,
        )
    common.console.print(table)


def register(app: typer.Typer) -> None:
    """Add the retrieval subcommands to the root app."""
    app.command("index")(index_command)
    app.command("search")(search_command)
    app.command("domains")(domains_command)
