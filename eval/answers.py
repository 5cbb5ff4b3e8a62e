"""Answers eval: what the adapter and retrieval each buy, against a running server over HTTP.

Each question is asked, greedily (temperature 0), under each configuration:

- `base`: the base model alone (adapter off, retrieval off);
- `base+rag`: the base model with retrieved context;
- `adapter`: the domain's adapter without retrieval;
- `adapter+rag`: the adapter with retrieved context;
- `base+rag+Nshot`: the base model asked with a few-shot completion prompt (N solved
  training questions with their own retrieved context; `eval.few_shot`), the fair baseline
  for a pretrained base, which was never taught a chat template.

Every report names the strongest configuration without an adapter: the bar an adapter
has to clear.

The configuration travels per request as `extra_body={"lorag": {"adapter": ..., "retrieval":
..., "k": ...}}`; the server returns the sources it used in the `sources` extension field.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

from eval.client import check_model, describe_error, extension, make_client
from eval.dataset import EvalItem
from eval.few_shot import SolvedExample, ask_few_shot, choose_shots, solved_examples
from eval.judge import Judge
from eval.metrics import (
    answer_contained,
    citation_accuracy,
    cited_docs,
    exact_match,
    groundedness,
    token_f1,
)


@dataclass(frozen=True)
class Configuration:
    name: str
    adapter: bool
    retrieval: bool
    shots: int = 0  # > 0: the base model asked few-shot over /v1/completions


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


_FEW_SHOT = re.compile(r"^base\+rag\+([1-9][0-9]?)shot$")


def configuration(name: str) -> Configuration | None:
    """A configuration by name (`base+rag+3shot`: few-shot with 3 examples), or None."""
    if name in CONFIGURATIONS:
        return CONFIGURATIONS[name]
    match = _FEW_SHOT.match(name)
    if match:
        return Configuration(name, adapter=False, retrieval=True, shots=int(match.group(1)))
    return None


def parse_configurations(text: str) -> list[Configuration]:
    """`base,base+rag` -> configurations, in the order given; unknown names are an error."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if configuration(n) is None]
    if unknown or not names:
        raise ValueError(
            f"unknown configuration(s) {unknown or text!r}; choose from "
            + ", ".join(CONFIGURATIONS)
            + ", base+rag+Nshot (N = 1..99)"
        )
    return [c for n in dict.fromkeys(names) if (c := configuration(n)) is not None]


def strongest_base(summary: dict[str, Any], configs: Sequence[Configuration]) -> str | None:
    """The configuration without an adapter that contains the answer most often."""
    scored = [
        (summary[c.name]["contained"], c.name)
        for c in configs
        if not c.adapter and summary.get(c.name, {}).get("contained") is not None
    ]
    return max(scored)[1] if scored else None


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
    examples: Sequence[SolvedExample] = (),
) -> dict[str, Any]:
    """One question under one configuration: the response, its timing and its metrics.

    Few-shot configurations ask `/v1/completions` with `examples` (and record the prompt);
    the others ask chat completions with the configuration's switches."""
    row = _row(item, config)
    started = time.perf_counter()
    try:
        if config.shots:
            row["prompt"], sources, response = await ask_few_shot(
                client, domain, item, examples[: config.shots], max_tokens, k
            )
            output = (response.choices[0].text or "").strip()
        else:
            switches: dict[str, Any] = {"adapter": config.adapter, "retrieval": config.retrieval}
            if k is not None and config.retrieval:
                switches["k"] = k
            response = await client.chat.completions.create(
                model=domain,
                messages=[{"role": "user", "content": item.question}],
                temperature=0.0,
                max_tokens=max_tokens,
                extra_body={"lorag": switches},
            )
            sources = list(extension(response, "sources") or [])
            output = response.choices[0].message.content or ""
    except Exception as err:  # noqa: BLE001 - every failure is recorded, none stops the run
        row.update(error=describe_error(err), latency_s=time.perf_counter() - started)
        return row
    return _answered(row, item, response, output, sources, started)


def _answered(
    row: dict[str, Any],
    item: EvalItem,
    response: Any,
    output: str,
    sources: list[dict[str, Any]],
    started: float,
) -> dict[str, Any]:
    """A row completed with an answer (chat or text completion), its usage and its scores."""
    row.update(
        error=None,
        output=output,
        finish_reason=response.choices[0].finish_reason,
        latency_s=time.perf_counter() - started,
        completion_tokens=response.usage.completion_tokens if response.usage else None,
        prompt_tokens=response.usage.prompt_tokens if response.usage else None,
        sources=sources,
        served_by=extension(response, "lorag") or {},
        **score_answer(item, output, sources),
    )
    return row


def _row(item: EvalItem, config: Configuration) -> dict[str, Any]:
    return {
        "id": item.id,
        "line": item.line,
        "config": config.name,
        "question": item.question,
        "answer": item.answer,
        "aliases": list(item.aliases),
        "gold_docs": list(item.gold_docs),
    }


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
    shots_pool: Sequence[EvalItem] = (),
) -> list[dict[str, Any]]:
    """Ask every question under every configuration, at most `concurrency` at a time.

    `shots_pool` (the domain's training questions) feeds the `base+rag+Nshot` configurations.
    """
    check_configurations(domain, await check_model(client, domain), configs)
    most_shots = max((c.shots for c in configs), default=0)
    examples: list[SolvedExample] = []
    if most_shots:
        if not shots_pool:
            raise ValueError(
                "few-shot configurations need solved examples: pass the domain's training "
                "questions (--shots-from FILE)"
            )
        shots = choose_shots(shots_pool, items, most_shots)
        examples = await solved_examples(client, domain, shots, k)
    gate = asyncio.Semaphore(concurrency)

    async def one(item: EvalItem, config: Configuration) -> dict[str, Any]:
        async with gate:
            row = await ask(client, domain, item, config, max_tokens, k, examples)
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


@dataclass
class AnswersRun:
    """One answers eval as asked: the server, the questions, the budget; `params()` is what
    its report records."""

    domain: str
    evalset: Path
    url: str
    api_key: str | None
    configs: list[Configuration]
    items: list[EvalItem]
    max_tokens: int
    concurrency: int
    timeout_s: float
    k: int | None = None
    shots_pool: Sequence[EvalItem] = ()
    shots_from: Path | None = None
    judge: Judge | None = None
    judge_label: str = "off"

    def params(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "evalset": str(self.evalset),
            "server": self.url,
            "configs": [c.name for c in self.configs],
            "questions": len(self.items),
            "k": self.k if self.k is not None else "server default",
            "max_tokens": self.max_tokens,
            "concurrency": self.concurrency,
            "temperature": 0.0,
            "judge": self.judge_label,
            **({"shots_from": str(self.shots_from)} if self.shots_from is not None else {}),
        }


async def run_answers(
    run: AnswersRun, progress: Callable[[], None] | None = None
) -> list[dict[str, Any]]:
    """Ask `run` over a client of its own (and close it, and the judge's, afterwards)."""
    client = make_client(run.url, run.api_key, run.timeout_s)
    try:
        return await evaluate_answers(
            client, run.domain, run.items, run.configs, run.max_tokens, run.concurrency,
            k=run.k, judge=run.judge, progress=progress, shots_pool=run.shots_pool,
        )  # fmt: skip
    finally:
        await client.close()
        if run.judge is not None:
            await run.judge.client.close()
