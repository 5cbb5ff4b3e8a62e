"""The fair baseline for a pretrained base model: a few-shot completion prompt with retrieval.

A pretrained (not instruction-tuned) model was never taught a chat template; it is best
asked with solved examples in plain text. Configuration `base+rag+Nshot` asks the base
model with `retrieval.prompt.render_few_shot`: N solved questions from the domain's
*training* set (never from the eval set: overlapping questions are refused), each with its
own context retrieved from the server's index with the domain's settings, then the eval
question with its context, then `Answer:`. The server's `/v1/search` retrieves, its
`/v1/completions` generates (greedy, stopping at the end of the line).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from openai import AsyncOpenAI

from eval.dataset import EvalItem
from eval.metrics import normalise
from retrieval.prompt import COMPLETION_STOP, FEW_SHOT_INSTRUCTION, render_few_shot


@dataclass(frozen=True)
class Passage:
    """A `/v1/search` hit as `retrieval.prompt` renders it."""

    source: str
    heading: str
    text: str


@dataclass(frozen=True)
class SolvedExample:
    question: str
    answer: str
    passages: tuple[Passage, ...]


def choose_shots(pool: Sequence[EvalItem], items: Sequence[EvalItem], count: int) -> list[EvalItem]:
    """The first `count` examples of `pool` whose question is not asked in `items`.

    Refuses when the pool is the eval set itself or too small: a baseline that saw the
    answers it is scored on would not be a baseline.
    """
    asked = {normalise(item.question) for item in items}
    overlap = [p for p in pool if normalise(p.question) in asked]
    if pool and len(overlap) == len(pool):
        raise ValueError(
            "the few-shot examples are the eval questions themselves; pass the domain's "
            "training questions (--shots-from)"
        )
    chosen = [p for p in pool if normalise(p.question) not in asked][:count]
    if len(chosen) < count:
        raise ValueError(
            f"{count} few-shot examples asked for, but the shots file has only {len(chosen)} "
            "questions that are not in the eval set"
        )
    return chosen


async def retrieve(client: AsyncOpenAI, domain: str, query: str, k: int | None) -> list[dict]:
    """The server's top-k for `query` in `domain` (its own k and mode unless `k` is given)."""
    body: dict[str, Any] = {"domain": domain, "query": query}
    if k is not None:
        body["k"] = k
    response = await client.post("/search", body=body, cast_to=object)
    return list(response["data"])  # type: ignore[index]


def _passages(hits: Sequence[dict]) -> tuple[Passage, ...]:
    return tuple(Passage(h["source"], h.get("heading", ""), h["text"]) for h in hits)


async def solved_examples(
    client: AsyncOpenAI, domain: str, shots: Sequence[EvalItem], k: int | None
) -> list[SolvedExample]:
    return [
        SolvedExample(
            s.question, s.answer, _passages(await retrieve(client, domain, s.question, k))
        )
        for s in shots
    ]


def describe(examples: Sequence[SolvedExample]) -> dict[str, Any]:
    """What the report says about the prompt the base model got."""
    return {
        "shots": len(examples),
        "instruction": FEW_SHOT_INSTRUCTION,
        "shot_questions": [e.question for e in examples],
        "stop": COMPLETION_STOP,
        "endpoint": "/v1/completions",
    }


async def ask_few_shot(
    client: AsyncOpenAI,
    domain: str,
    item: EvalItem,
    examples: Sequence[SolvedExample],
    max_tokens: int,
    k: int | None,
) -> tuple[str, list[dict], Any]:
    """`(prompt, sources, response)` of one question asked few-shot of the base model."""
    hits = await retrieve(client, domain, item.question, k)
    prompt = render_few_shot(
        [(e.question, e.passages, e.answer) for e in examples], item.question, _passages(hits)
    )
    response = await client.completions.create(
        model="base",
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=0.0,
        stop=[COMPLETION_STOP],
    )
    sources = [{"index": n, **hit} for n, hit in enumerate(hits, start=1)]
    return prompt, sources, response
