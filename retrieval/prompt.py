"""How retrieved context becomes prompt text: the one module training and serving share.

An adapter is only as good as the match between the prompt it was trained on and the
prompt it is served with, so both sides build their chat messages here and nowhere else.
The format has a version, recorded in each adapter's manifest and checked by the server.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

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


# Layouts -----------------------------------------------------------------------------------
#
# `chat`: the messages above go through the tokenizer's chat template (instruction-tuned
# bases, which were taught their template). `completion`: the same messages as plain text
# that a pretrained base already reads, with no turn markers it never saw:
#
#     {system prompt}
#
#     {instruction}
#
#     Context:
#     [1] source > heading
#     text …
#
#     Question: {question}
#     Answer: {answer}⏎
#
# An answer is one line: it ends at the first newline, which is also where generation stops
# (`COMPLETION_STOP`). Earlier turns of a conversation come first, each user turn followed
# by `Answer:` and its reply. Measured on the example domains, a pretrained Gemma 3 270M
# reads the answer from context far more often in this layout than in a chat template it
# was never trained on (docs/training.md), so an adapter starts from the base's strength.

PromptLayout = Literal["chat", "completion"]
LayoutSetting = Literal["auto", "chat", "completion"]
PROMPT_FORMATS: dict[str, str] = {"chat": PROMPT_FORMAT, "completion": "lorag-completion-v1"}
COMPLETION_STOP = "\n"
ANSWER_CUE = "\nAnswer:"
BASE_MODEL_FILE = "lorag-base.json"  # written by lorag next to a base it knows is pretrained


class PromptLayoutError(ValueError):
    """A conversation that the chosen layout cannot express."""


def prompt_format(layout: PromptLayout) -> str:
    """The format name recorded in an adapter's manifest and checked by the server."""
    return PROMPT_FORMATS[layout]


def resolve_layout(setting: str, model_dir: Path) -> PromptLayout:
    """`chat` or `completion` for a base model folder; `auto` decides from the folder.

    `auto` is `completion` for a pretrained base: one that lorag marked so when it made the
    folder (`lorag-base.json`, e.g. the built-in Gemma 3 270M) or whose tokenizer has no
    chat template; otherwise `chat`, the template the model was instruction-tuned with.
    """
    if setting == "completion":
        return "completion"
    if setting == "chat":
        if not _has_chat_template(Path(model_dir)):
            raise ValueError(
                f"model.prompt_layout is chat, but the tokenizer in {model_dir} has no chat "
                "template; use completion (or auto) for a pretrained model, or add a "
                "chat_template to its tokenizer_config.json"
            )
        return "chat"
    if setting != "auto":
        raise ValueError(f"prompt layout {setting!r}: choose auto, chat or completion")
    marker = Path(model_dir) / BASE_MODEL_FILE
    if marker.is_file():
        try:
            if json.loads(marker.read_text()).get("pretrained"):
                return "completion"
        except (OSError, ValueError) as err:
            raise ValueError(f"{marker}: unreadable ({err}); delete it or fix it") from err
    return "chat" if _has_chat_template(Path(model_dir)) else "completion"


def _has_chat_template(model_dir: Path) -> bool:
    if (model_dir / "chat_template.jinja").is_file() or (
        model_dir / "chat_template.json"
    ).is_file():
        return True
    config = model_dir / "tokenizer_config.json"
    try:
        return config.is_file() and bool(json.loads(config.read_text()).get("chat_template"))
    except (OSError, ValueError):
        return False


def completion_segments(messages: Sequence[dict[str, str]]) -> list[tuple[str, bool]]:
    """The conversation as text pieces `(text, is_answer)` in the completion layout.

    Answers (assistant turns) are their own pieces, so that training can put the loss on
    them alone and both sides tokenize the same pieces the same way. A conversation that
    ends with a user turn ends with the `Answer:` cue the model continues.
    """
    segments: list[tuple[str, bool]] = []
    prompt = ""
    for position, message in enumerate(messages):
        role, content = message.get("role"), str(message.get("content", "")).strip()
        if role == "system":
            if position != 0:
                raise PromptLayoutError("a system message may only come first")
            prompt += content + "\n\n"
        elif role == "user":
            if segments and segments[-1][1]:
                prompt += "\n"  # a blank line between an answer and the next question
            prompt += content + ANSWER_CUE
        elif role == "assistant":
            if not prompt.endswith(ANSWER_CUE):
                raise PromptLayoutError("an assistant turn must follow a user turn")
            segments.append((prompt, False))
            prompt = ""
            segments.append((" " + " ".join(content.split("\n")).strip() + COMPLETION_STOP, True))
        else:
            raise PromptLayoutError(f"unsupported role {role!r}")
    if prompt:
        segments.append((prompt, False))
    return segments


def completion_ids(
    tokenizer: Any, messages: Sequence[dict[str, str]]
) -> tuple[list[int], list[bool]]:
    """Token ids of a conversation in the completion layout, and which ids are answers.

    Each piece is tokenized on its own (the first with the tokenizer's special tokens, e.g.
    `<bos>`), so the served prompt is token for token the prefix a training sample had.
    """
    ids: list[int] = []
    is_answer: list[bool] = []
    for number, (text, answer) in enumerate(completion_segments(messages)):
        piece = tokenizer(text, add_special_tokens=number == 0)["input_ids"]
        ids += piece
        is_answer += [answer] * len(piece)
    return ids, is_answer


def check_one_line_answers(messages: Sequence[dict[str, str]]) -> None:
    """Refuse answers the completion layout cannot teach: they end at the first newline."""
    for message in messages:
        if message.get("role") == "assistant" and "\n" in str(message.get("content", "")).strip():
            raise PromptLayoutError(
                "an assistant answer spans several lines, but in the completion layout an "
                "answer ends at its first newline; make it one line, or train and serve an "
                "instruction-tuned base with `model.prompt_layout: chat`"
            )


# The fair baseline for a pretrained base -----------------------------------------------------

FEW_SHOT_INSTRUCTION = (
    "Answer each question with the short phrase from its context that answers it."
)


def render_few_shot(
    shots: Sequence[tuple[str, Sequence[Passage], str]],
    question: str,
    passages: Sequence[Passage],
    instruction: str = FEW_SHOT_INSTRUCTION,
) -> str:
    """A few-shot completion prompt: solved `(question, passages, answer)` blocks, then ours.

    This is how a pretrained base model is best asked without any training (eval's
    `base+rag:Nshot` configuration): an instruction line, each solved example with its own
    retrieved context, then the question and `Answer:`; generation stops at a newline.
    """

    def block(q: str, ps: Sequence[Passage]) -> str:
        context = f"Context:\n{render_context(ps)}\n\n" if ps else ""
        return f"{context}Question: {q.strip()}{ANSWER_CUE}"

    blocks = [instruction.strip()] if instruction.strip() else []
    blocks += [f"{block(q, ps)} {' '.join(a.split())}" for q, ps, a in shots]
    blocks.append(block(question, passages))
    return "\n\n".join(blocks)
