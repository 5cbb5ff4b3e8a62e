"""`lorag eval retrieval|answers|perplexity|load`: measure what adaptation and retrieval buy."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table as RichTable

from lorag.commands.common import config_of, console, resolve_base
from lorag.progress import count_progress

eval_app = typer.Typer(
    name="eval",
    help="Evaluate retrieval, answers (base/adapter x with/without RAG), perplexity and load.",
    no_args_is_help=True,
)

ReportDirOption = Annotated[
    Path | None,
    typer.Option("--out", help="Folder for run folders (default: eval.report_dir, reports/)"),
]
ServerOption = Annotated[str | None, typer.Option(help="Server URL (default: eval.server_url)")]
ApiKeyOption = Annotated[str | None, typer.Option(help="Bearer API key (default: eval.api_key)")]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the summary and file paths as JSON.")
]


def register(app: typer.Typer) -> None:
    """Add `lorag eval ...` to the root app."""
    app.add_typer(eval_app, name="eval")


def _show(report: Any, written: Any, as_json: bool) -> None:
    """Print the report's tables (or its JSON summary) and where its files are."""
    files = {
        "folder": str(written.folder),
        "report": str(written.markdown),
        "results": str(written.json),
        "plots": [str(p) for p in written.plots],
    }
    if as_json:
        typer.echo(json.dumps({"summary": report.summary, "files": files}, indent=2,
                              default=str))
        return
    from eval.report import format_cell

    for table in report.tables:
        rich_table = RichTable(title=table.title, title_justify="left")
        for header in table.headers:
            rich_table.add_column(header, overflow="fold")
        for row in table.rows:
            rich_table.add_row(*[format_cell(c) for c in row])
        console.print(rich_table)
        if table.note:
            console.print(f"[dim]{table.note}[/]", highlight=False)
    console.print(f"Report:  {written.markdown}", highlight=False)
    console.print(f"Results: {written.json}", highlight=False)
    for plot in written.plots:
        console.print(f"Plot:    {plot}", highlight=False)


@eval_app.command("retrieval")
def retrieval_command(
    ctx: typer.Context,
    domain: Annotated[str, typer.Argument(help="The indexed domain to search.")],
    evalset: Annotated[Path, typer.Argument(help="JSONL eval set (question, answer, gold_doc).")],
    mode: Annotated[
        list[str] | None,
        typer.Option(
            "--mode", "-m", help="dense, sparse or hybrid (repeatable; default: all three)"
        ),
    ] = None,
    out: ReportDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recall@k, MRR, nDCG and answer-in-context@k per search mode, the whole set batched."""
    from eval.dataset import load_eval_set
    from eval.report import write_report
    from eval.retrieval_eval import MODES, build_report, evaluate_retrieval
    from retrieval import Retriever

    config = config_of(ctx)
    settings = config.eval
    items = load_eval_set(evalset)
    modes = list(dict.fromkeys(mode)) if mode else list(MODES)
    searching = f"Searching {len(items)} questions in {domain!r} ({', '.join(modes)})"
    with console.status(searching), Retriever(config.retrieval) as retriever:
        runs = evaluate_retrieval(
            retriever, domain, items, modes, settings.k_values, settings.rank_k,
            settings.fetch_factor,
        )
    report = build_report(runs, domain, str(evalset), items, settings.k_values, settings.rank_k)
    written = write_report(report, out or settings.report_dir)
    _show(report, written, as_json)


@eval_app.command("answers")
def answers_command(
    ctx: typer.Context,
    domain: Annotated[str, typer.Argument(help="The domain (model name) to ask.")],
    evalset: Annotated[Path, typer.Argument(help="JSONL eval set (question, answer, ...).")],
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
    configs: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated: base, base+rag, adapter, adapter+rag, base+rag+Nshot "
            "(the base model asked few-shot; needs --shots-from) [default: the first four]"
        ),
    ] = None,
    shots_from: Annotated[
        Path | None,
        typer.Option(
            help="The domain's training QA JSONL: solved examples for base+rag+Nshot "
            "(questions also in the eval set are never used)"
        ),
    ] = None,
    k: Annotated[
        int | None,
        typer.Option(help="Chunks to retrieve (default: eval.k, else the domain's)", min=1),
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help="Tokens per answer (default: eval.max_tokens)", min=1)
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Requests in flight (default: eval.concurrency)", min=1)
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Only the first N questions.", min=1)
    ] = None,
    judge: Annotated[
        bool | None, typer.Option("--judge/--no-judge", help="LLM judge (default: eval.judge)")
    ] = None,
    judge_url: Annotated[
        str | None, typer.Option(help="Judge base URL, as the openai client takes it (…/v1)")
    ] = None,
    judge_model: Annotated[str | None, typer.Option(help="Judge model name")] = None,
    judge_api_key: Annotated[
        str | None, typer.Option(help="Judge endpoint's key (default: eval.judge.api_key)")
    ] = None,
    out: ReportDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Ask every question under each configuration over HTTP and score the answers."""
    from openai import AsyncOpenAI

    from eval.answers import CONFIGURATIONS, AnswersRun, parse_configurations, run_answers
    from eval.answers_report import build_report
    from eval.dataset import load_eval_set
    from eval.judge import Judge
    from eval.report import write_report

    settings = config_of(ctx).eval
    use_judge = settings.judge.enabled if judge is None else judge
    judge_base = judge_url or settings.judge.base_url
    judge_name = judge_model or settings.judge.model
    if use_judge and not (judge_base and judge_name):
        raise ValueError("--judge needs --judge-url and --judge-model (or eval.judge settings)")
    grader = None
    if use_judge:
        configured = settings.judge.api_key
        judge_key = judge_api_key or (configured.get_secret_value() if configured else None)
        grader = Judge(
            AsyncOpenAI(base_url=judge_base, api_key=judge_key or "none",
                        timeout=settings.judge.timeout_s),
            judge_name,
            settings.judge.max_tokens,
        )  # fmt: skip
    run = AnswersRun(
        domain=domain,
        evalset=evalset,
        url=server or settings.server_url,
        api_key=api_key or (settings.api_key.get_secret_value() if settings.api_key else None),
        configs=parse_configurations(configs or ",".join(CONFIGURATIONS)),
        items=load_eval_set(evalset)[:limit],
        max_tokens=max_tokens or settings.max_tokens,
        concurrency=concurrency or settings.concurrency,
        timeout_s=settings.request_timeout_s,
        k=k if k is not None else settings.k,
        shots_pool=load_eval_set(shots_from) if shots_from is not None else [],
        shots_from=shots_from,
        judge=grader,
        judge_label=f"{judge_name} at {judge_base}" if use_judge else "off",
    )
    with count_progress(console) as bar:
        task = bar.add_task("Asking", total=len(run.items) * len(run.configs))
        rows = asyncio.run(run_answers(run, progress=lambda: bar.advance(task)))
    report = build_report(rows, run.configs, run.params())
    written = write_report(report, out or settings.report_dir)
    _show(report, written, as_json)


@eval_app.command("perplexity")
def perplexity_command(
    ctx: typer.Context,
    text_files: Annotated[
        list[Path], typer.Argument(help="Held-out .md/.txt files or folders of them.")
    ],
    base: Annotated[
        str | None,
        typer.Option(help="Base model: gemma-3-270m, a local folder or a cached HF id "
                          "(default: model.base_model)"),
    ] = None,
    adapter: Annotated[
        list[Path] | None, typer.Option("--adapter", "-a", help="Adapter folder (repeatable)")
    ] = None,
    max_length: Annotated[int | None, typer.Option(help="Window in tokens", min=8)] = None,
    stride: Annotated[int | None, typer.Option(help="Window step in tokens", min=1)] = None,
    out: ReportDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Perplexity of held-out text under the base model and each adapter (sliding window)."""
    from eval.perplexity import build_report, collect_text_files, evaluate_perplexity
    from eval.report import write_report

    config = config_of(ctx)
    settings = config.eval.perplexity
    window = max_length or settings.max_length
    step = stride or min(settings.stride, window - 1)
    if step >= window:
        raise ValueError(f"--stride ({step}) must be smaller than --max-length ({window})")
    files = collect_text_files(text_files)
    base_name, base_dir = resolve_base(config.model, base)
    with console.status("Scoring") as status:
        results = evaluate_perplexity(
            base_dir, adapter or [], files, window, step,
            progress=lambda what: status.update(f"Scoring {what}"),
        )
    params = {
        "base": base_name,
        "base_dir": str(base_dir),
        "adapters": [str(a) for a in adapter or []],
        "files": [str(f) for f in files],
        "max_length": window,
        "stride": step,
    }
    report = build_report(results, params)
    written = write_report(report, out or config.eval.report_dir)
    _show(report, written, as_json)


@eval_app.command("load")
def load_command(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="The domain (model name) to load.")],
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
    concurrency: Annotated[int | None, typer.Option(help="Concurrent clients", min=1)] = None,
    duration: Annotated[float | None, typer.Option(help="Seconds to run", min=0.1)] = None,
    requests: Annotated[int | None, typer.Option(help="Requests to send", min=1)] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Tokens per answer", min=1)] = None,
    prompt: Annotated[str | None, typer.Option(help="The user message every client sends")] = None,
    rag: Annotated[
        bool | None, typer.Option("--rag/--no-rag", help="Retrieval (default: the domain's)")
    ] = None,
    use_adapter: Annotated[
        bool | None,
        typer.Option("--adapter/--no-adapter", help="The domain's adapter (default: on)"),
    ] = None,
    replace_adapter: Annotated[
        list[str] | None,
        typer.Option(help="NAME=PATH to load (again) during the run (repeatable, cycled)"),
    ] = None,
    replace_every: Annotated[
        float | None, typer.Option(help="Seconds between adapter replacements", min=0.1)
    ] = None,
    admin_key: Annotated[
        str | None,
        typer.Option(help="Admin API key for replacements (default: eval.admin_api_key)"),
    ] = None,
    out: ReportDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Concurrent streaming clients: latency p50/p95/p99, TTFT, output tokens/s, errors."""
    from eval.client import make_client
    from eval.load import Replacement, build_report, run_load
    from eval.report import write_report

    settings = config_of(ctx).eval
    load = settings.load
    url = server or settings.server_url
    key = api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
    admin = admin_key or (
        settings.admin_api_key.get_secret_value() if settings.admin_api_key else None
    )
    clients = concurrency or load.concurrency
    # Always bounded: by --duration and/or --requests; with neither, by the configured duration
    # (and the configured request cap). Each request is bounded by the request timeout.
    run_duration = duration if duration is not None else (None if requests else load.duration_s)
    run_requests = requests if requests is not None else load.max_requests
    replacements = [Replacement.parse(r) for r in replace_adapter or []]
    switches: dict[str, Any] = {}
    if rag is not None:
        switches["retrieval"] = rag
    if use_adapter is not None:
        switches["adapter"] = use_adapter

    async def run() -> Any:
        client = make_client(url, key, settings.request_timeout_s)
        total = run_requests if run_duration is None else None
        with count_progress(console) as bar:
            task = bar.add_task(f"Load ({clients} clients)", total=total)
            try:
                return await run_load(
                    client, url, model, clients, run_duration, run_requests,
                    max_tokens or load.max_tokens, prompt or load.prompt, switches or None,
                    replacements, replace_every, admin, settings.request_timeout_s,
                    progress=lambda _record: bar.advance(task),
                )
            finally:
                await client.close()

    result = asyncio.run(run())
    params = {
        "server": url,
        "model": model,
        "concurrency": clients,
        "duration_s": run_duration if run_duration is not None else "unbounded",
        "max_requests": run_requests,
        "max_tokens": max_tokens or load.max_tokens,
        "switches": switches or "server defaults",
        "replacements": [f"{r.name}={r.path}" for r in replacements] or "none",
        "replace_every_s": replace_every,
    }
    report = build_report(result, params)
    written = write_report(report, out or settings.report_dir)
    _show(report, written, as_json)
