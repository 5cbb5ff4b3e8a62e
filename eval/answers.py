"""Answers eval: what the adapter and retrieval each buy, against a running server over HTTP.

Each question is asked, greedily (temperature 0), under each configuration:

- `base`: the base model alone (adapter off, retrieval off);
- `base+rag`: the base model with retrieved context;
- `adapter`: the domain's adapter without retrieval;
- `adapter+rag`: the adapter with retrieved context.

The configuration travels per request as `extra_body={"lorag": {"adapter": ..., "retrieval":
..., "k": ...}}`; the server returns the sources it used in the `sources` extension field.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from openai import AsyncOpenAI

from eval.client import check_model, describe_error, extension
from eval.dataset import EvalItem
from eval.judge import Judge
from eval.metrics import (
    answer_contained,
    citation_accuracy,
    cited_docs,
    exact_match,
    groundedness,
    mean_or_none,
    percentile,
    token_f1,
)
from eval.report import Report, Table, bar_chart, histogram


@dataclass(frozen=True)
class Configuration:
    name: str
    adapter: bool
    retrieval: bool


CONFIGURATIONS = {
    c.name: c
    for c in (
        Configuration("base", adapter=False, retrieval=False),
        Configuration("base+rag", adapter=False, retrieval=True),
        Configuration("adapter", adapter=True, retrieval=False),
        Configuration("adapter+rag", adapter=True, retrieval=True),
    )
}

METRICS = ("exact_match", "token_f1", "contained", "groundedness", "citation_accuracy", "judge")


def parse_configurations(text: str) -> list[Configuration]:
    """`base,base+rag` -> configurations, in the order given; unknown names are an error."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGURATIONS]
    if unknown or not names:
        raise ValueError(
            f"unknown configuration(s) {unknown or text!r}; choose from "
            + ", ".join(CONFIGURATIONS)
        )
    return [CONFIGURATIONS[n] for n in dict.fromkeys(names)]


def score_answer(item: EvalItem, output: str, sources: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The automatic metrics of one answer (see `eval.metrics` for each definition)."""
    docs, explicit = cited_docs(output, sources)
    return {
        "exact_match": exact_match(output, item.references),
        "token_f1": token_f1(output, item.references),
        "contained": answer_contained(output, item.references),
        "groundedness": groundedness(output, [str(s.get("text", "")) for s in sources]),
        "citation_accuracy": citation_accuracy(output, sources, item.gold_docs),
        "cited_docs": docs,
        "cited_explicitly": explicit,
    }


def check_configurations(
    domain: str, meta: dict[str, Any], configs: Sequence[Configuration]
) -> None:
    """Refuse, before asking anything, configurations a lorag domain cannot serve."""
    if meta.get("kind") != "domain":
        return
    problems = []
    if any(c.adapter for c in configs) and not meta.get("adapter"):
        problems.append("it has no adapter (drop adapter and adapter+rag from --configs)")
    if any(c.retrieval for c in configs) and not meta.get("index"):
        problems.append("it has no index (drop base+rag and adapter+rag from --configs)")
    if problems:
        raise ValueError(f"domain {domain!r} cannot be evaluated as asked: " + "; ".join(problems))


async def ask(
    client: AsyncOpenAI,
    domain: str,
    item: EvalItem,
    config: Configuration,
    max_tokens: int,
    k: int | None,
) -> dict[str, Any]:
    """One question under one configuration: the response, its timing and its metrics."""
    switches: dict[str, Any] = {"adapter": config.adapter, "retrieval": config.retrieval}
    if k is not None and config.retrieval:
        switches["k"] = k
    row: dict[str, Any] = {
        "id": item.id,
        "line": item.line,
        "config": config.name,
        "question": item.question,
        "answer": item.answer,
        "aliases": list(item.aliases),
        "gold_docs": list(item.gold_docs),
    }
    started = time.perf_counter()
    try:
        response = await client.chat.completions.create(
            model=domain,
            messages=[{"role": "user", "content": item.question}],
            temperature=0.0,
            max_tokens=max_tokens,
            extra_body={"lorag": switches},
        )
    except Exception as err:  # noqa: BLE001 - every failure is recorded, none stops the run
        row.update(error=describe_error(err), latency_s=time.perf_counter() - started)
        return row
    latency = time.perf_counter() - started
    choice = response.choices[0]
    output = choice.message.content or ""
    sources = extension(response, "sources") or []
    meta = extension(response, "lorag") or {}
    row.update(
        error=None,
        output=output,
        finish_reason=choice.finish_reason,
        latency_s=latency,
        completion_tokens=response.usage.completion_tokens if response.usage else None,
        prompt_tokens=response.usage.prompt_tokens if response.usage else None,
        sources=list(sources),
        served_by=meta,
        **score_answer(item, output, sources),
    )
    return row


async def evaluate_answers(
    client: AsyncOpenAI,
    domain: str,
    items: Sequence[EvalItem],
    configs: Sequence[Configuration],
    max_tokens: int,
    concurrency: int,
    k: int | None = None,
    judge: Judge | None = None,
    progress: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Ask every question under every configuration, at most `concurrency` at a time."""
    check_configurations(domain, await check_model(client, domain), configs)
    gate = asyncio.Semaphore(concurrency)

    async def one(item: EvalItem, config: Configuration) -> dict[str, Any]:
        async with gate:
            row = await ask(client, domain, item, config, max_tokens, k)
            if judge is not None and row["error"] is None:
                try:
                    row["judge"], row["judge_reply"] = await judge.grade(
                        item.question, item.answer, row["output"]
                    )
                except Exception as err:  # noqa: BLE001 - a judge failure is data too
                    row["judge"], row["judge_error"] = None, describe_error(err)
        if progress:
            progress()
        return row

    tasks = [one(item, config) for item in items for config in configs]
    return list(await asyncio.gather(*tasks))


def summarise(rows: Sequence[dict[str, Any]], configs: Sequence[Configuration]) -> dict[str, Any]:
    """Per configuration: means of each metric over answered questions, errors, latency."""
    summary: dict[str, Any] = {}
    for config in configs:
        mine = [r for r in rows if r["config"] == config.name]
        ok = [r for r in mine if r["error"] is None]
        latencies = [r["latency_s"] for r in ok]
        summary[config.name] = {
            "questions": len(mine),
            "answered": len(ok),
            "errors": len(mine) - len(ok),
            **{m: mean_or_none(r.get(m) for r in ok) for m in METRICS},
            "latency_p50_s": percentile(latencies, 50),
            "latency_p95_s": percentile(latencies, 95),
            "mean_completion_tokens": mean_or_none(r.get("completion_tokens") for r in ok),
            "judge_graded": sum(1 for r in ok if r.get("judge") is not None),
            "adapter_versions": sorted(
                {
                    r["served_by"]["adapter_version"]
                    for r in ok
                    if (r.get("served_by") or {}).get("adapter_version") is not None
                }
            ),
        }
    return summary


def build_report(
    rows: Sequence[dict[str, Any]],
    configs: Sequence[Configuration],
    params: dict[str, Any],
) -> Report:
    """Tables, plots and per-question results of an answers eval."""
    summary = summarise(rows, configs)
    judged = params.get("judge", "off") != "off"
    metrics = [
        m
        for m in METRICS
        if any(s[m] is not None for s in summary.values()) or (m == "judge" and judged)
    ]
    headers = ["config", "answered", "errors", *metrics, "p50 s", "p95 s"]
    table = Table(
        title=f"Answers: {params.get('domain', '')}",
        headers=headers,
        rows=[
            [
                name,
                s["answered"],
                s["errors"],
                *[s[m] for m in metrics],
                s["latency_p50_s"],
                s["latency_p95_s"],
            ]
            for name, s in summary.items()
        ],
        note=(
            "Means over answered questions. exact_match/token_f1/contained compare the output "
            "with the answer and aliases (SQuAD normalisation); groundedness and "
            "citation_accuracy need returned sources (n/a without retrieval); citation_accuracy "
            "also needs gold documents."
        ),
    )
    errors = [r for r in rows if r["error"] is not None]
    tables = [table]
    if errors:
        tables.append(
            Table(
                title="Failed requests",
                headers=["config", "id", "error"],
                rows=[[r["config"], r["id"], r["error"]] for r in errors[:50]],
                note=f"{len(errors)} failed request(s)" + (", first 50 shown" if len(errors) > 50
                                                            else ""),
            )
        )
    figures = {
        "configs.png": bar_chart(
            f"Configurations side by side: {params.get('domain', '')}",
            metrics,
            {name: [s[m] for m in metrics] for name, s in summary.items()},
        ),
        "latency.png": histogram(
            "Request latency by configuration",
            {
                c.name: [r["latency_s"] for r in rows if r["config"] == c.name and not r["error"]]
                for c in configs
            },
        ),
    }
    return Report(
        kind="answers",
        title=f"Answers eval: {params.get('domain', '')}",
        params=params,
        summary={"configs": summary},
        results=list(rows),
        tables=tables,
        figures=figures,
    )
