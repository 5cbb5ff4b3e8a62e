"""How retrieved context becomes prompt text: the one module training and serving share.

An adapter is only as good as the match between the prompt it was trained on and the
prompt it is served with, so both sides build their chat messages here and nowhere else.
The format has a version, recorded in each adapter's manifest and checked by the server.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

PROMPT_FORMAT = "lorag-rag-v1"

DEFAULT_INSTRUCTION = (
    "Answer the question using the context below. Cite the sources you use by their "
    "number, like [1]. If the context does not contain the answer, say that you do not know."
)


class Passage(Protocol):
    """Anything with a source, a heading path and a text (a search hit, a training chunk)."""

    @property
    def source(self) -> str: ...

    @property
    def heading(self) -> str: ...

    @property
    def text(self) -> str: ...


def render_context(passages: Sequence[Passage]) -> str:
    """Number the passages `[1]`, `[2]`, … with their source and heading, one block each."""
    blocks = []
    for number, passage in enumerate(passages, start=1):
        title = passage.source + (f" > {passage.heading}" if passage.heading else "")
        blocks.append(f"[{number}] {title}\n{passage.text.strip()}")
    return "\n\n".join(blocks)


def render_user_turn(
    question: str, passages: Sequence[Passage], instruction: str = DEFAULT_INSTRUCTION
) -> str:
    """The user turn the model sees: the question alone, or instruction, context and question."""
    if not passages:
        return question
    return f"{instruction}\n\nContext:\n{render_context(passages)}\n\nQuestion: {question.strip()}"


def build_messages(
    messages: Sequence[dict[str, str]],
    passages: Sequence[Passage],
    system_prompt: str | None = None,
    instruction: str = DEFAULT_INSTRUCTION,
) -> list[dict[str, str]]:
    """Chat messages ready for a chat template.

    The latest user turn is rewritten with the retrieved context; a `system_prompt` is put
    first unless the conversation already starts with a system message. Earlier turns are
    kept as they were.
    """
    result = [dict(m) for m in messages]
    last_user = max((i for i, m in enumerate(result) if m.get("role") == "user"), default=None)
    if last_user is None:
        raise ValueError("the conversation has no user message to answer")
    result[last_user]["content"] = render_user_turn(
        result[last_user]["content"], passages, instruction
    )
    if system_prompt and not (result and result[0].get("role") == "system"):
        result.insert(0, {"role": "system", "content": system_prompt})
    return result
