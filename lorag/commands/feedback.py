"""`lorag feedback export`: rated answers from the server, as training JSONL for the next
adapter version (storage and rules: `serving.feedback`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from lorag.commands.common import config_of, console

feedback_app = typer.Typer(
    name="feedback",
    help="Feedback on served answers (POST /v1/feedback), exported as training data.",
    no_args_is_help=True,
)


class NothingToExportError(ValueError):
    """No feedback passed the filters; no file was written."""


def register(app: typer.Typer) -> None:
    """Add `lorag feedback ...` to the root app."""
    app.add_typer(feedback_app, name="feedback")


def _from_server(server: str, api_key: str | None, params: dict[str, Any]) -> tuple[str, Any]:
    """The export JSONL and its summary from a running server's admin API."""
    import httpx

    from serving.feedback.export import ExportSummary
    from serving.routers.feedback import SUMMARY_HEADER

    url = server.rstrip("/") + "/admin/feedback/export"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    query = {key: value for key, value in params.items() if value is not None}
    try:
        response = httpx.get(url, params=query, headers=headers, timeout=300)
    except httpx.HTTPError as err:
        raise ConnectionError(f"cannot reach {url}: {err}") from err
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:500]
        raise RuntimeError(f"{url} answered {response.status_code}: {message}")
    summary = ExportSummary.model_validate_json(response.headers.get(SUMMARY_HEADER, "{}"))
    return response.text, summary


def _show(summary: Any, output: Path, fmt: str, domain: str | None) -> None:
    table = Table(title="Exported feedback", title_justify="left")
    for column in ("domain", "positive", "correction", "total"):
        table.add_column(column, justify="left" if column == "domain" else "right")
    for name, kinds in summary.by_domain.items():
        positive, correction = kinds.get("positive", 0), kinds.get("correction", 0)
        table.add_row(name, str(positive), str(correction), str(positive + correction))
    console.print(table)
    if summary.excluded:
        excluded = ", ".join(
            f"{reason.replace('_', ' ')}: {count}" for reason, count in summary.excluded.items()
        )
        console.print(f"Left out: {excluded}", highlight=False)
    if summary.malformed_lines:
        console.print(
            f"[yellow]Skipped {summary.malformed_lines} malformed lines in the store.[/]",
            highlight=False,
        )
    if summary.records:
        train = (
            f"lorag train --qa {output} --domain {domain or '<domain>'}"
            if fmt == "qa"
            else f"lorag train --data {output}"
        )
        console.print(f"Wrote {summary.records} conversations to {output}", highlight=False)
        console.print(f"Train on them with: {train}", highlight=False, soft_wrap=True)


@feedback_app.command("export")
def export_command(
    ctx: typer.Context,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="JSONL file to write.", dir_okay=False)
    ],
    domain: Annotated[str | None, typer.Option(help="Only this domain's answers.")] = None,
    adapter: Annotated[
        str | None, typer.Option(help="Only answers this adapter (any version) gave.")
    ] = None,
    min_rating: Annotated[
        int,
        typer.Option(min=1, max=2, help="Lowest rating kept as is (corrections always count)."),
    ] = 1,
    since: Annotated[
        str | None,
        typer.Option(help="Only feedback given since: ISO date/time or an age (7d, 12h)."),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="chat: messages JSONL for `lorag train --data`; qa: question/answer JSONL for "
            "`lorag train --qa --domain` (context re-retrieved at training).",
        ),
    ] = "chat",
    server: Annotated[
        str | None,
        typer.Option(help="Pull from a running server (URL) instead of serving.data_dir."),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="LORAG_API_KEY", help="Admin API key for --server."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Serving data folder to read (default: serving.data_dir)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Write rated answers as training JSONL for the adapter's next version.

    Positively rated answers are kept as they were, corrected ones get the correction, and
    negative ratings without a correction are left out.

    Reads every replica's feedback file under serving.data_dir (safe while servers run), or
    with --server asks a running server's admin API for the same export.
    """
    from serving.feedback.export import (
        ExportOptions,
        export_records,
        parse_since,
        to_jsonl,
        write_jsonl,
    )
    from serving.feedback.records import feedback_folder

    if fmt not in ("chat", "qa"):
        raise typer.BadParameter("use chat or qa", param_hint="--format")
    if since is not None:
        try:
            parse_since(since)
        except ValueError as err:
            raise typer.BadParameter(str(err), param_hint="--since") from err
    if server:
        params = {
            "domain": domain,
            "adapter": adapter,
            "min_rating": min_rating,
            "since": since,
            "format": fmt,
        }
        with console.status(f"Exporting feedback from {server}"):
            text, summary = _from_server(server, api_key, params)
        source = server
    else:
        folder = feedback_folder(data_dir or config_of(ctx).serving.data_dir)
        options = ExportOptions(
            domain=domain,
            adapter=adapter,
            min_rating=min_rating,
            since=parse_since(since) if since else None,
            format=fmt,  # type: ignore[arg-type]  # checked above
        )
        with console.status(f"Reading feedback in {folder}"):
            records, summary = export_records(folder, options)
        text = to_jsonl(records)
        source = str(folder)
    if summary.records:
        write_jsonl(text, output)
    if as_json:
        typer.echo(json.dumps({**summary.model_dump(), "output": str(output)}, indent=2))
    else:
        _show(summary, output, fmt, domain)
    if not summary.records:
        raise NothingToExportError(
            f"no rated answers in {source} passed the filters; {output} was not written "
            "(rate answers with POST /v1/feedback)"
        )
