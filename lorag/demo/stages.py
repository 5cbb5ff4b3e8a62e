"""The demo's stages: each one a few calls into the libraries, and what it prints."""

from __future__ import annotations

import asyncio
import functools
import gc
import shutil
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel

from lorag.commands.common import resolve_base
from lorag.demo.plan import DemoPlan, ExampleDomain
from lorag.demo.results import AskedQuestion, DomainEval
from lorag.demo.summary import overall_verdict, results_table, verdict
from lorag.progress import count_progress, index_progress


def resolve_model(plan: DemoPlan, console: Console) -> Path:
    """Stage 1: a local checkpoint folder of the base model (converting Gemma on first use)."""
    name, model_dir = resolve_base(plan.config.model, on=console)
    console.print(f"Base model [bold]{name}[/]: {model_dir}", highlight=False)
    return model_dir


def index_domains(retriever: Any, domains: list[ExampleDomain], console: Console) -> dict:
    """Stage 2: each domain's docs/ into its own index."""
    reports = {}
    for domain in domains:
        with index_progress(console, domain.name) as progress:
            report = retriever.index(domain.name, domain.docs, progress=progress)
        reports[domain.name] = report
        console.print(
            f"[bold]{domain.name}[/]: {report.documents_total} documents, "
            f"{report.chunks_total} chunks ({report.seconds:.1f} s)"
            + (f", {len(report.skipped)} skipped" if report.skipped else ""),
            highlight=False,
        )
    return reports


def build_samples(
    retriever: Any, domain: ExampleDomain, plan: DemoPlan, console: Console
) -> tuple[list[Any], Any]:
    """RAFT samples of a domain's training questions, from its index, as the server prompts."""
    from training.raft import samples_from_qa_file

    raft, k, mode = plan.config.served_raft(domain.name)
    examples, info, stats = samples_from_qa_file(
        domain.train_qa, retriever, domain.name, raft, k, mode, plan.config.training.skip_invalid
    )
    layout = (
        f"the server's top {k} in rank order, the gold passage put in when retrieval missed it"
        if raft.order == "retrieved"
        else f"the gold passage + {k - 1} retrieved distractors, shuffled"
    )
    console.print(
        f"[bold]{domain.name}[/]: {stats.pairs} training questions -> {len(examples)} RAFT "
        f"samples ({layout}; {stats.distractor_only} without the answer)",
        highlight=False,
    )
    return examples, info


def train_adapters(
    model_dir: Path, samples: dict[str, tuple[list[Any], Any]], plan: DemoPlan, console: Console
) -> dict[str, Any]:
    """Stage 3: one adapter per domain, written to `<adapters>/<domain>/v1`."""
    from training.data import build_dataset
    from training.raft import write_samples
    from training.trainer import train

    config = plan.config
    results = {}
    for name, (examples, info) in samples.items():
        dataset = build_dataset([(examples, info)], config.training.validation_fraction)
        output = config.training.output_root / name / "v1"
        steps = config.training.max_steps or "epochs"
        console.print(
            f"Training [bold]{name}[/]: {len(dataset.train)} samples, {steps} steps of "
            f"{config.training.batch_size}, LoRA r={config.training.lora.r} -> {output}",
            highlight=False,
        )
        result = train(
            model_dir, dataset, config.training, output, name=name,
            base_model=config.model.base_model, domain=name, dtype=config.model.dtype,
            prompt_layout=config.model.prompt_layout, progress=True, console=console,
        )  # fmt: skip
        write_samples(examples, output)
        metrics = result.manifest.metrics
        console.print(
            f"  loss {metrics['first_train_loss']:.3f} -> {metrics['train_loss']:.3f} in "
            f"{metrics['steps']} steps, {metrics['train_seconds']:.0f} s "
            f"({metrics['tokens_per_s']:.0f} tokens/s)",
            highlight=False,
        )
        results[name] = result
        gc.collect()  # the base model of this run is no longer needed
    return results


def ask_questions(plan: DemoPlan, console: Console) -> list[AskedQuestion]:
    """Stage 5: a few held-out questions per domain through the official `openai` client."""
    from openai import OpenAI

    from eval.client import extension
    from eval.dataset import load_eval_set

    client = OpenAI(
        base_url=f"{plan.url}/v1",
        api_key=plan.keys.chat,
        timeout=plan.config.eval.request_timeout_s,
        max_retries=0,
    )
    asked = []
    try:
        for domain in plan.domains:
            for item in load_eval_set(domain.heldout_qa)[: plan.settings.ask.questions]:
                response = client.chat.completions.create(
                    model=domain.name,
                    messages=[{"role": "user", "content": item.question}],
                    max_tokens=plan.settings.ask.max_tokens,
                    temperature=0.0,
                )
                answer = AskedQuestion(
                    domain=domain.name,
                    question=item.question,
                    expected=item.answer,
                    answer=response.choices[0].message.content or "",
                    sources=list(extension(response, "sources") or []),
                    served_by=dict(extension(response, "lorag") or {}),
                )
                asked.append(answer)
                console.print(_answer_panel(answer), highlight=False)
    finally:
        client.close()
    return asked


def _answer_panel(answer: AskedQuestion) -> Panel:
    served = answer.served_by
    lines = [
        f"[bold]Q:[/] {answer.question}",
        f"[bold]A:[/] {answer.answer.strip() or '(empty)'}",
        f"[dim]expected: {answer.expected}[/]",
    ]
    for source in answer.sources:
        where = source.get("source", "") + (
            f" > {source['heading']}" if source.get("heading") else ""
        )
        lines.append(
            f"[dim]  [{source.get('index')}] {where} (score {source.get('score', 0):.3f})[/]"
        )
    title = (
        f"{answer.domain}: adapter {served.get('adapter')} v{served.get('adapter_version')}, "
        f"index {served.get('index_version')}"
    )
    return Panel("\n".join(lines), title=title, title_align="left")


async def _swap(plan: DemoPlan, domain: ExampleDomain, new_path: str) -> Any:
    from eval.client import make_client
    from eval.dataset import load_eval_set
    from eval.load import Replacement, swap_under_load

    budget = plan.settings.replace
    timeout_s = plan.config.eval.request_timeout_s
    client = make_client(plan.url, plan.keys.chat, timeout_s)
    try:
        return await swap_under_load(
            client, plan.url, Replacement(domain.name, new_path),
            [item.question for item in load_eval_set(domain.heldout_qa)],
            concurrency=budget.concurrency, requests_after_swap=budget.requests_after_swap,
            max_requests=budget.max_requests, max_tokens=budget.max_tokens,
            admin_key=plan.keys.admin, timeout_s=timeout_s,
        )  # fmt: skip
    finally:
        await client.close()


def replace_adapter(plan: DemoPlan, adapters: dict[str, Path], console: Console) -> Any:
    """Stage 6: publish the adapter again as `<domain>/v2` and load it under the same name
    while `concurrency` requests are in flight."""
    domain = plan.replace_domain
    v1 = adapters[domain.name]
    v2 = v1.parent / "v2"
    shutil.copytree(v1, v2, ignore=shutil.ignore_patterns("checkpoints"))
    console.print(
        f"Publishing {v2} (the same weights, as a retrained adapter would arrive) and "
        f"loading it as [bold]{domain.name}[/] while {plan.settings.replace.concurrency} "
        "requests run…",
        highlight=False,
    )
    with console.status("Requests running; swapping the adapter"):
        outcome = asyncio.run(_swap(plan, domain, f"{domain.name}/v2"))
    versions = ", ".join(f"v{v}: {n}" for v, n in outcome.versions.items()) or "none"
    after = ", ".join(f"v{v}: {n}" for v, n in outcome.after_swap_versions.items()) or "none"
    colour = "green" if not outcome.failures else "red"
    console.print(
        f"Swap: HTTP {outcome.swap_status} in {outcome.swap_seconds:.2f} s with "
        f"{outcome.in_flight_at_swap} requests in flight (v{outcome.replaced_version} -> "
        f"v{outcome.new_version})\n"
        f"[{colour}]{outcome.requests} requests, {len(outcome.failures)} failed[/]; "
        f"served by {versions}; requests started after the swap: {after}",
        highlight=False,
    )
    for failure in outcome.failures[:5]:
        console.print(f"  [red]failed:[/] {failure}", highlight=False)
    return outcome


def _evaluate_domain(plan: DemoPlan, domain: ExampleDomain, console: Console) -> DomainEval:
    from eval.answers import AnswersRun, parse_configurations, run_answers
    from eval.answers_report import build_report
    from eval.dataset import load_eval_set
    from eval.report import write_report

    budget = plan.settings.eval
    run = AnswersRun(
        domain=domain.name,
        evalset=domain.heldout_qa,
        url=plan.url,
        api_key=plan.keys.chat,
        configs=parse_configurations(",".join(budget.configs)),
        items=load_eval_set(domain.heldout_qa)[: budget.questions],
        max_tokens=budget.max_tokens,
        concurrency=budget.concurrency,
        timeout_s=plan.config.eval.request_timeout_s,
        k=plan.config.eval.k,
        shots_pool=load_eval_set(domain.train_qa),
    )
    with count_progress(console) as bar:
        task = bar.add_task(
            f"{domain.name}: {len(run.items)} questions x {len(run.configs)} configurations",
            total=len(run.items) * len(run.configs),
        )
        rows = asyncio.run(run_answers(run, functools.partial(bar.advance, task)))
    report = build_report(rows, run.configs, run.params())
    written = write_report(report, plan.config.eval.report_dir)
    return DomainEval(
        domain=domain.name,
        questions=len(run.items),
        summary=report.summary["configs"],
        report=written.markdown,
        results=written.json,
        plots=list(written.plots),
    )


def evaluate(plan: DemoPlan, console: Console) -> dict[str, DomainEval]:
    """Stage 7: the answers eval of each domain on its first held-out questions."""
    evals = {domain.name: _evaluate_domain(plan, domain, console) for domain in plan.domains}
    console.print(results_table(evals))
    for name, result in evals.items():
        if found := verdict(result.summary):
            console.print(f"[bold]{name}[/]: {found}", highlight=False)
        console.print(f"  report: {result.report}", highlight=False)
    if overall := overall_verdict(evals):
        console.print(f"[bold]All domains[/]: {overall}", highlight=False)
    return evals
