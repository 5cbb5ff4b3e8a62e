"""Conversations to token ids with assistant-only labels, and token ids to batches.

Labels are the input ids on the assistant's tokens and -100 elsewhere, so the loss covers
only what the model should say. The chat template marks those tokens: a template with
`{% generation %}` blocks gives the mask directly; for other templates each assistant turn
is located by rendering the conversation up to it (which needs a template whose renderings
of a conversation's prefixes are prefixes of its rendering, as chat templates are).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from retrieval.prompt import (
    PromptLayout,
    PromptLayoutError,
    check_one_line_answers,
    completion_ids,
)

IGNORE_INDEX = -100


class TemplateError(ValueError):
    """The tokenizer's chat template cannot mark the assistant's tokens."""


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class Batch:
    """A padded (or packed) micro-batch. `attention_mask` is None for packed rows, whose
    `position_ids` restart at each example so that examples do not attend to each other."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    attention_mask: torch.Tensor | None
    position_ids: torch.Tensor | None
    tokens: int  # real (non-padding) tokens
    targets: int  # tokens that carry a loss

    def model_inputs(self) -> dict[str, torch.Tensor]:
        inputs = {"input_ids": self.input_ids, "labels": self.labels}
        if self.attention_mask is not None:
            inputs["attention_mask"] = self.attention_mask
        if self.position_ids is not None:
            inputs["position_ids"] = self.position_ids
        return inputs


_GENERATION_BLOCK = re.compile(r"{%-?\s*generation\s*-?%}")


def has_generation_markers(template: str) -> bool:
    """Whether a chat template marks assistant text with `{% generation %}` blocks."""
    return bool(_GENERATION_BLOCK.search(template))


def tokenize_conversation(
    tokenizer, messages: Sequence[dict[str, str]], layout: PromptLayout = "chat"
) -> TokenizedExample:
    """Token ids of a whole conversation with labels on the assistant's tokens only.

    `layout` is the prompt layout the adapter will be served with (`retrieval.prompt`):
    `chat` renders through the tokenizer's chat template, `completion` as plain text.
    """
    if layout == "completion":
        try:
            check_one_line_answers(messages)
            ids, answer = completion_ids(tokenizer, messages)
        except PromptLayoutError as err:
            raise TemplateError(str(err)) from err
        return TokenizedExample(ids, [t if a else IGNORE_INDEX for t, a in zip(ids, answer)])
    template = tokenizer.chat_template
    if not template:
        raise TemplateError("the tokenizer has no chat template")
    if has_generation_markers(template):
        encoded = tokenizer.apply_chat_template(
            list(messages), tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        ids, mask = list(encoded["input_ids"]), list(encoded["assistant_masks"])
    else:
        ids, mask = _mask_by_prefixes(tokenizer, messages)
    labels = [token if keep else IGNORE_INDEX for token, keep in zip(ids, mask)]
    if all(label == IGNORE_INDEX for label in labels):
        raise TemplateError("the chat template marked no assistant tokens in a conversation")
    return TokenizedExample(ids, labels)


def _render(tokenizer, messages, generation_prompt: bool) -> list[int]:
    encoded = tokenizer.apply_chat_template(
        list(messages), tokenize=True, return_dict=True, add_generation_prompt=generation_prompt
    )
    return list(encoded["input_ids"])


def _mask_by_prefixes(tokenizer, messages) -> tuple[list[int], list[int]]:
    ids = _render(tokenizer, messages, False)
    mask = [0] * len(ids)
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_render(tokenizer, messages[:index], True))
        end = len(_render(tokenizer, messages[: index + 1], False))
        if ids[:start] != _render(tokenizer, messages[:index], True):
            raise TemplateError(
                "the chat template renders a conversation's beginning differently from the "
                "whole conversation; add {% generation %} markers to it"
            )
        mask[start:end] = [1] * (end - start)
    return ids, mask


def epoch_order(count: int, seed: int, epoch: int) -> list[int]:
    """The example order of one epoch: a seeded shuffle, the same on every run and rank."""
    order = list(range(count))
    random.Random(f"lorag:{seed}:{epoch}").shuffle(order)
    return order


def pack(examples: Sequence[TokenizedExample], max_len: int) -> list[list[TokenizedExample]]:
    """Greedily fill rows of at most `max_len` tokens with whole examples, in order."""
    rows: list[list[TokenizedExample]] = []
    length = max_len + 1
    for example in examples:
        if length + len(example) > max_len:
            rows.append([])
            length = 0
        rows[-1].append(example)
        length += len(example)
    return rows


def collate(rows: Sequence[Sequence[TokenizedExample]], pad_id: int) -> Batch:
    """Pad rows (each one example, or several packed) on the right into a micro-batch."""
    packed = any(len(row) > 1 for row in rows)
    width = max(sum(len(e) for e in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for example in row:
            end = start + len(example)
            input_ids[r, start:end] = torch.tensor(example.input_ids)
            labels[r, start:end] = torch.tensor(example.labels)
            attention[r, start:end] = 1
            positions[r, start:end] = torch.arange(len(example))
            start = end
        positions[r, start:] = torch.arange(width - start)  # padding: a sequence of its own
    tokens = int(attention.sum())
    targets = int((labels[:, 1:] != IGNORE_INDEX).sum())
    if packed:
        return Batch(input_ids, labels, None, positions, tokens, targets)
    return Batch(input_ids, labels, attention, None, tokens, targets)


def epoch_batches(
    examples: Sequence[TokenizedExample],
    batch_size: int,
    pad_id: int,
    seed: int,
    epoch: int,
    packing: bool = False,
    max_len: int = 2048,
) -> list[Batch]:
    """The micro-batches of one epoch, in a seeded order."""
    ordered = [examples[i] for i in epoch_order(len(examples), seed, epoch)]
    rows = pack(ordered, max_len) if packing else [[e] for e in ordered]
    return [collate(rows[i : i + batch_size], pad_id) for i in range(0, len(rows), batch_size)]


def eval_batches(examples: Sequence[TokenizedExample], batch_size: int, pad_id: int) -> list[Batch]:
    """Validation micro-batches, sorted by length to waste little padding."""
    ordered = sorted(examples, key=len)
    return [
        collate([[e] for e in ordered[i : i + batch_size]], pad_id)
        for i in range(0, len(ordered), batch_size)
    ]
