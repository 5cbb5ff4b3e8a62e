"""`run_demo`: the stages in order, each timed, the server stopped whatever happens."""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from lorag.commands.serving import serve_argv
from lorag.demo import stages
from lorag.demo.plan import DemoPlan, default_demo_file, prepare
from lorag.demo.results import DemoResult, StageTiming
from lorag.demo.settings import DemoError
from lorag.demo.summary import timings_table, write_summary
from serving.process import ServerProcess, ServerStartError, engine_cpu_env

SERVER_LOG = "server.log"
STAGES = (
    "Resolve the base model",
    "Index the domains",
    "Train one adapter per domain",
    "Start the server",
    "Ask questions over HTTP",
    "Replace an adapter while requests run",
    "Evaluate on held-out questions",
    "Stop the server",
)


def demo_server(plan: DemoPlan, model_dir: Path) -> ServerProcess:
    """`lorag serve` with the demo's config, offline, the vLLM worker on every core."""
    return ServerProcess(
        serve_argv(plan.config_file, model_dir),
        plan.data_dir / SERVER_LOG,
        plan.url,
        env={"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
        defaults={"TRANSFORMERS_OFFLINE": "1", **engine_cpu_env()},
    )


@contextlib.contextmanager
def _stage(result: DemoResult, number: int, console: Console) -> Iterator[None]:
    title = STAGES[number - 1]
    console.rule(f"[bold][{number}/{len(STAGES)}] {title}")
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds = time.perf_counter() - started
        result.stages.append(StageTiming(number, title, seconds))
        console.print(f"[dim]{title}: {seconds:.1f} s[/]", highlight=False)


def _index_and_sample(plan: DemoPlan, result: DemoResult, console: Console) -> dict[str, Any]:
    """Stage 2, and the RAFT samples while the index is open (the server opens it next)."""
    from retrieval import Retriever

    with Retriever(plan.config.retrieval) as retriever:
        result.indexes = stages.index_domains(retriever, plan.domains, console)
        with console.status("Retrieving contexts for the training questions"):
            return {
                domain.name: stages.build_samples(retriever, domain, plan, console)
                for domain in plan.domains
            }


def _start(server: ServerProcess, plan: DemoPlan, console: Console) -> None:
    """Stage 4: start `lorag serve` and wait for `/ready`."""
    server.start()
    console.print(
        f"lorag serve (pid {server.pid}) on {plan.url}, log {server.log_file}", highlight=False
    )
    with console.status("Starting the vLLM engine and loading the adapters") as status:
        try:
            ready = server.wait_ready(
                plan.settings.server_start_timeout_s,
                on_wait=lambda s: status.update(f"Starting the vLLM engine ({s:.0f} s)"),
            )
        except ServerStartError as err:
            slow = server.process is not None and server.process.poll() is None
            hint = "; raise demo.server_start_timeout_s on a slow machine" if slow else ""
            raise DemoError(f"{err}{hint}") from err
    console.print(
        f"Ready: engine {ready.get('engine')}, model {ready.get('model')}, "
        f"{ready.get('domains')} domains, {ready.get('adapters')} adapters",
        highlight=False,
    )


def run_demo(
    demo_file: Path | None = None,
    *,
    data_dir: Path | None = None,
    console: Console | None = None,
) -> DemoResult:
    """Run every stage (see `lorag.demo`); the server is stopped whatever happens."""
    from transformers.utils import logging as hf_logging

    console = console or Console()
    hf_logging.disable_progress_bar()
    plan = prepare(demo_file or default_demo_file(), data_dir)
    result = DemoResult(plan=plan)
    console.print(
        f"lorag demo from [bold]{plan.demo_file}[/]: {len(plan.domains)} domains, data in "
        f"{plan.data_dir}, config {plan.config_file}",
        highlight=False,
    )
    with _stage(result, 1, console):
        result.model_dir = stages.resolve_model(plan, console)
    with _stage(result, 2, console):
        samples = _index_and_sample(plan, result, console)
    with _stage(result, 3, console):
        trained = stages.train_adapters(result.model_dir, samples, plan, console)
        for name, run in trained.items():
            result.adapters[name] = run.adapter_dir
            result.training[name] = run.manifest.metrics
        del trained, samples
        gc.collect()

    server = demo_server(plan, result.model_dir)
    try:
        with _stage(result, 4, console):
            _start(server, plan, console)
        with _stage(result, 5, console):
            result.answers = stages.ask_questions(plan, console)
        with _stage(result, 6, console):
            result.replacement = stages.replace_adapter(plan, result.adapters, console)
        with _stage(result, 7, console):
            result.evals = stages.evaluate(plan, console)
    finally:
        with _stage(result, 8, console):
            code, left = server.stop()
            result.server_exit_code, result.leftover_processes = code, left
            if server.process is not None:
                state = "no processes left" if not left else f"STILL RUNNING: {left}"
                console.print(f"Server stopped (exit code {code}); {state}", highlight=False)

    result.summary_file = write_summary(result)
    console.print(timings_table(result.stages))
    console.print(f"Demo summary: [bold]{result.summary_file}[/]", highlight=False)
    for name, e in result.evals.items():
        console.print(f"Eval report ({name}): [bold]{e.report}[/]", highlight=False)
    return result
