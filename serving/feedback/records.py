"""Feedback records: one answered exchange, one rating or correction, and the JSONL lines
every replica's file holds (see `serving.feedback` for the store's rules)."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

FEEDBACK_FOLDER = "feedback"
RATING_MIN, RATING_MAX = -2, 2


def utc_now() -> datetime:
    return datetime.now(UTC)


class FeedbackStoreError(RuntimeError):
    """The feedback store cannot be read or written."""


class UnknownResponseError(LookupError):
    """No recorded exchange has this response id (never served, or dropped by retention)."""


class Exchange(BaseModel):
    """One answered chat request, as recorded for feedback."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["exchange"] = "exchange"
    response_id: str
    time: datetime = Field(default_factory=utc_now)
    model: str
    domain: str | None = None
    adapter: str | None = None
    adapter_version: int | None = None
    index_version: str | None = None
    system_prompt: str | None = None
    messages: list[dict[str, str]]  # as the client sent them (roles normalised), no context
    answer: str
    finish_reason: str | None = None
    sources: list[str] = Field(default_factory=list)  # retrieved doc ids, in prompt order
    api_key: str | None = None


class FeedbackEvent(BaseModel):
    """A rating and/or correction of one response (a later event for the id replaces it)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["feedback"] = "feedback"
    response_id: str
    time: datetime = Field(default_factory=utc_now)
    rating: int | None = Field(None, ge=RATING_MIN, le=RATING_MAX)
    correction: str | None = None
    comment: str | None = None
    api_key: str | None = None


LINE = TypeAdapter(Annotated[Exchange | FeedbackEvent, Field(discriminator="type")])


def feedback_folder(data_dir: Path) -> Path:
    """Where a server with `serving.data_dir = data_dir` keeps its feedback files."""
    return Path(data_dir) / FEEDBACK_FOLDER


def replica_name(configured: str | None = None) -> str:
    """This replica's file name: the configured one, else the host name (made file-safe)."""
    if configured:
        return configured
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).strip(".-")
    return host or "replica"


def line_bytes(record: BaseModel) -> bytes:
    return record.model_dump_json(exclude_none=False).encode() + b"\n"


def complete_lines(handle: Any) -> Iterator[tuple[int, bytes]]:
    """`(end offset, line)` for each newline-terminated line from the handle's position
    (blank ones included)."""
    offset = handle.tell()
    for line in handle:
        if not line.endswith(b"\n"):
            return  # a line still being written, or torn by a crash
        offset += len(line)
        yield offset, line


@dataclass
class StoredFeedback:
    """Everything the feedback files of a folder hold, the last feedback per response."""

    exchanges: dict[str, Exchange]
    feedback: dict[str, FeedbackEvent]
    files: int
    malformed_lines: int


def read_folder(folder: Path) -> StoredFeedback:
    """Read every replica's feedback file in `folder` (safe while servers write to them)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: no feedback store here (it appears when a server with feedback "
            "enabled answers its first chat request; check serving.data_dir)"
        )
    exchanges: dict[str, Exchange] = {}
    feedback: dict[str, FeedbackEvent] = {}
    paths = sorted(folder.glob("*.jsonl"))
    malformed = 0
    for path in paths:
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            continue  # a replica's file replaced between glob and open: read on the next run
        with handle:
            for _, line in complete_lines(handle):
                if not line.strip():
                    continue
                try:
                    record = LINE.validate_json(line)
                except ValidationError:
                    malformed += 1
                    continue
                if isinstance(record, Exchange):
                    exchanges[record.response_id] = record
                else:
                    last = feedback.get(record.response_id)
                    if last is None or record.time >= last.time:
                        feedback[record.response_id] = record
    return StoredFeedback(exchanges, feedback, len(paths), malformed)
