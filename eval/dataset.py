"""Eval sets: JSONL files of questions with reference answers and, optionally, gold documents.

One JSON object per line::

    {"question": "...", "answer": "...", "aliases": ["..."], "gold_doc": "guides/setup.md"}

`gold_doc` (one) or `gold_docs` (a list) name documents as retrieval does: the path relative to
the indexed root. `id` is optional (default: `line-<n>`). Blank lines are skipped. Every line is
validated and every problem is reported as `file:line: field: message`.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_ERRORS_SHOWN = 20


class EvalSetError(ValueError):
    """An eval set file that cannot be used; the message names each file:line and field."""


class EvalItem(BaseModel):
    """One question of an eval set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    line: int
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    aliases: tuple[str, ...] = ()
    gold_docs: tuple[str, ...] = ()

    @property
    def references(self) -> list[str]:
        """The answer and its aliases: every string that counts as correct."""
        return [self.answer, *self.aliases]


class _Line(BaseModel):
    """The schema of one JSONL line, as a user writes it."""

    model_config = ConfigDict(extra="forbid")

    id: str | int | None = None
    question: str
    answer: str
    aliases: list[str] = Field(default_factory=list)
    gold_doc: str | None = None
    gold_docs: list[str] | None = None

    @field_validator("question", "answer")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("aliases")
    @classmethod
    def _aliases_not_blank(cls, values: list[str]) -> list[str]:
        if any(not v.strip() for v in values):
            raise ValueError("aliases must not be empty strings")
        return [v.strip() for v in values]

    @field_validator("gold_doc")
    @classmethod
    def _gold_doc_path(cls, value: str | None) -> str | None:
        return None if value is None else normalise_doc_id(value)

    @field_validator("gold_docs")
    @classmethod
    def _gold_docs_paths(cls, values: list[str] | None) -> list[str] | None:
        if values is None:
            return None
        if not values:
            raise ValueError("must list at least one document (or leave the field out)")
        return [normalise_doc_id(v) for v in values]


def normalise_doc_id(value: str) -> str:
    """A document id as retrieval writes it: a relative POSIX path without `./`."""
    text = value.strip().replace("\\", "/")
    if not text:
        raise ValueError("a document id must not be empty")
    path = PurePosixPath(text)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{value!r} must be a path relative to the indexed root")
    return str(path)


def _describe(err: ValidationError) -> list[str]:
    problems = []
    for item in err.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(line)"
        if item["type"] == "extra_forbidden":
            problems.append(
                f"{field}: unknown field (allowed: id, question, answer, aliases, gold_doc, "
                "gold_docs)"
            )
        elif item["type"] == "missing":
            problems.append(f"{field}: required field is missing")
        else:
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"{field}: {message} (got {item.get('input')!r})")
    return problems


def parse_line(text: str, line: int) -> EvalItem:
    """Validate one JSONL line; raises ValueError with `field: message` parts."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"invalid JSON: {err.msg} (column {err.colno})") from err
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")  # noqa: TRY004
    try:
        parsed = _Line.model_validate(data)
    except ValidationError as err:
        raise ValueError("; ".join(_describe(err))) from err
    if parsed.gold_doc is not None and parsed.gold_docs is not None:
        raise ValueError("gold_doc, gold_docs: give one or the other, not both")
    gold = [parsed.gold_doc] if parsed.gold_doc is not None else list(parsed.gold_docs or [])
    item_id = f"line-{line}" if parsed.id is None else str(parsed.id)
    return EvalItem(
        id=item_id,
        line=line,
        question=parsed.question,
        answer=parsed.answer,
        aliases=tuple(dict.fromkeys(parsed.aliases)),
        gold_docs=tuple(dict.fromkeys(gold)),
    )


def load_eval_set(path: Path) -> list[EvalItem]:
    """Read and validate a JSONL eval set; every bad line is reported, none is skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: eval set not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise EvalSetError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    items: list[EvalItem] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            item = parse_line(text, number)
        except ValueError as err:
            errors.append(f"{path}:{number}: {err}")
            continue
        if item.id in seen:
            errors.append(f"{path}:{number}: id: {item.id!r} already used on line {seen[item.id]}")
            continue
        seen[item.id] = number
        items.append(item)
    if errors:
        shown = errors[:MAX_ERRORS_SHOWN]
        more = len(errors) - len(shown)
        tail = [f"... and {more} more"] if more else []
        raise EvalSetError(
            f"{path}: {len(errors)} invalid line(s):\n" + "\n".join([*shown, *tail])
        )
    if not items:
        raise EvalSetError(f"{path}: the eval set has no questions")
    return items
