"""Training data: JSONL files in three formats, validated line by line, as chat conversations.

Each line is one record, in any of these formats (recognised by its keys; extra keys are
ignored):

- chat: `{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}`
  (a system message only first, at least one user turn, ending with an assistant turn);
- prompt/completion: `{"prompt": "...", "completion": "..."}`;
- alpaca: `{"instruction": "...", "input": "..." (optional), "output": "..."}`.

Invalid lines are refused with `file:line: field: problem` (or skipped with a warning when
asked); duplicates are dropped; the train/validation split hashes each conversation, so it
does not depend on file order and a conversation keeps its side when data is added.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError, field_validator

from contracts.conversation import conversation_problem
from contracts.manifest import DataFile

Conversation = list[dict[str, str]]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
MAX_ERRORS_SHOWN = 20


class DataError(ValueError):
    """Training data that lorag cannot use; the message names the file, line and field."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ChatMessage(_Record):
    role: Literal["system", "user", "assistant"]
    content: Text


class ChatRecord(_Record):
    messages: list[ChatMessage]

    @field_validator("messages")
    @classmethod
    def _well_formed(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        problem = conversation_problem([m.model_dump() for m in messages])
        if problem:
            raise ValueError(problem)
        return messages

    def conversation(self) -> Conversation:
        return [{"role": m.role, "content": m.content} for m in self.messages]


class PromptCompletionRecord(_Record):
    prompt: Text
    completion: Text

    def conversation(self) -> Conversation:
        return [
            {"role": "user", "content": self.prompt},
            {"role": "assistant", "content": self.completion},
        ]


class AlpacaRecord(_Record):
    instruction: Text
    input: str = ""
    output: Text

    def conversation(self) -> Conversation:
        prompt = self.instruction + (f"\n\n{self.input.strip()}" if self.input.strip() else "")
        return [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": self.output},
        ]


def _record_type(obj: dict[str, Any]) -> type[_Record]:
    if "messages" in obj:
        return ChatRecord
    if "prompt" in obj or "completion" in obj:
        return PromptCompletionRecord
    if "instruction" in obj or "output" in obj:
        return AlpacaRecord
    if "question" in obj:
        raise ValueError(
            "a question/answer pair; pass QA files with --qa and --domain to build "
            "retrieval-aware samples"
        )
    raise ValueError(
        "unknown record format: expected `messages` (chat), `prompt`+`completion`, or "
        "`instruction`+`output` (alpaca)"
    )


def describe_validation_error(where: str, err: ValidationError) -> list[str]:
    """One `where: field: problem` line per pydantic error."""
    lines = []
    for item in err.errors():
        loc = ".".join(str(part) for part in item["loc"])
        msg = item["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {loc}: {msg}" if loc else f"{where}: {msg}")
    return lines


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """`(line number, object)` per non-blank line, or `(line number, error)` for a bad one."""
    try:
        handle = path.open(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: data file not found") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                yield number, f"not valid JSON: {err.msg} (column {err.colno})"
                continue
            if not isinstance(obj, dict):
                yield number, f"expected a JSON object, got {type(obj).__name__}"
                continue
            yield number, obj


def validate_lines(
    path: Path, parse: Callable[[dict[str, Any]], Any], skip_invalid: bool = False
) -> tuple[list[tuple[str, Any]], list[str]]:
    """Parse each line of `path`: `([(\"file:line\", parsed)], [error lines])`.

    Raises `DataError` when the file holds no valid line, or on any invalid line unless
    `skip_invalid` is set.
    """
    parsed, errors = [], []
    for number, obj in read_jsonl(path):
        where = f"{path}:{number}"
        if isinstance(obj, str):
            errors.append(f"{where}: {obj}")
            continue
        try:
            parsed.append((where, parse(obj)))
        except ValidationError as err:
            errors.extend(describe_validation_error(where, err))
        except ValueError as err:
            errors.append(f"{where}: {err}")
    if errors and (not skip_invalid or not parsed):
        shown = errors[:MAX_ERRORS_SHOWN]
        more = len(errors) - len(shown)
        head = f"{path}: no valid records" if not parsed else f"{path}: invalid records"
        raise DataError("\n".join([head, *shown] + ([f"... and {more} more"] if more else [])))
    if not parsed:
        raise DataError(f"{path}: the file is empty")
    return parsed, errors


def _parse_training_record(obj: dict[str, Any]) -> Conversation:
    return _record_type(obj).model_validate(obj).conversation()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def conversation_key(conversation: Conversation) -> str:
    """A stable hash of a conversation (for de-duplication and the split)."""
    text = json.dumps(conversation, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Example:
    """One conversation and where it came from (`file:line`)."""

    messages: Conversation
    origin: str


@dataclass
class Dataset:
    train: list[Example]
    validation: list[Example]
    files: list[DataFile]
    duplicates: int = 0
    warnings: list[str] = field(default_factory=list)


def load_data_file(
    path: Path, skip_invalid: bool = False
) -> tuple[list[Example], DataFile, list[str]]:
    """Read one chat / prompt-completion / alpaca JSONL file."""
    path = Path(path)
    parsed, errors = validate_lines(path, _parse_training_record, skip_invalid)
    examples = [Example(messages, where) for where, messages in parsed]
    info = DataFile(path=str(path), sha256=sha256_file(path), records=len(examples))
    return examples, info, errors


def build_dataset(
    sources: Iterable[tuple[list[Example], DataFile]],
    validation_fraction: float,
    warnings: Iterable[str] = (),
) -> Dataset:
    """De-duplicate the examples of all sources and split them into train and validation."""
    unique: dict[str, Example] = {}
    files, duplicates = [], 0
    for examples, info in sources:
        files.append(info)
        for example in examples:
            key = conversation_key(example.messages)
            if key in unique:
                duplicates += 1
            else:
                unique[key] = example
    if not unique:
        raise DataError("no training data: every file was empty")
    train, validation = split(unique, validation_fraction)
    return Dataset(train, validation, files, duplicates, list(warnings))


def split(examples: dict[str, Example], fraction: float) -> tuple[list[Example], list[Example]]:
    """Hash-ordered split: a conversation lands in validation when its hash falls below
    `fraction`; at least one on each side when there are two or more and `fraction > 0`."""
    ordered = sorted(examples.items())  # by hash: uniform and independent of input order
    cut = sum(1 for key, _ in ordered if int(key[:12], 16) / 16**12 < fraction)
    if fraction > 0 and len(ordered) >= 2:
        cut = min(max(cut, 1), len(ordered) - 1)
    validation = [example for _, example in ordered[:cut]]
    train = [example for _, example in ordered[cut:]]
    return train, validation


def load_dataset(
    paths: Iterable[Path], validation_fraction: float = 0.1, skip_invalid: bool = False
) -> Dataset:
    """Read, validate, de-duplicate and split training files."""
    sources, warnings = [], []
    for path in paths:
        examples, info, errors = load_data_file(Path(path), skip_invalid)
        sources.append((examples, info))
        warnings.extend(f"skipped {e}" for e in errors)
    if not sources:
        raise DataError("no training data given")
    return build_dataset(sources, validation_fraction, warnings)
