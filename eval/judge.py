"""An optional LLM judge: asks any OpenAI-compatible chat model to grade an answer 1-5."""

from __future__ import annotations

import re

from openai import AsyncOpenAI

JUDGE_PROMPT = """You grade answers to questions against a reference answer.

Question: {question}
Reference answer: {reference}
Answer to grade: {answer}

Reply with one digit from 1 to 5: 5 means the answer is correct and complete, 3 partly
correct, 1 wrong or missing. Reply with the digit only."""

_DIGIT = re.compile(r"\b([1-5])\b")


def parse_grade(text: str) -> float | None:
    """The first grade 1-5 in a judge's reply, scaled to [0, 1]; None when there is none."""
    match = _DIGIT.search(text or "")
    if match is None:
        return None
    return (int(match.group(1)) - 1) / 4


class Judge:
    """Grades answers through a chat completion endpoint (temperature 0)."""

    def __init__(self, client: AsyncOpenAI, model: str, max_tokens: int = 8) -> None:
        self.client = client
        self.model = model
        self.max_tokens = max_tokens

    async def grade(self, question: str, reference: str, answer: str) -> tuple[float | None, str]:
        """The scaled grade (None when the reply holds none) and the judge's raw reply."""
        prompt = JUDGE_PROMPT.format(question=question, reference=reference, answer=answer)
        response = await self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": prompt}],
            temperature=0.0,
            max_tokens=self.max_tokens,
        )
        reply = response.choices[0].message.content or ""
        return parse_grade(reply), reply
