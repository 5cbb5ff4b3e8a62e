"""Feedback on served answers, and its export as training data for an adapter's next version.

The store
---------
Every completed chat exchange is recorded (the conversation as the client sent it, not the
rendered prompt; the domain's system prompt; the answer; what served it: domain, adapter and
version, index version, the retrieved sources' doc ids). `POST /v1/feedback` then adds a
rating and/or a correction to a response id. Both are lines of append-only JSONL files:

    <serving.data_dir>/feedback/<replica>.jsonl      (replica: serving.feedback.replica,
                                                       default the host name)

- Each line is one JSON object, `{"type": "exchange", ...}` or `{"type": "feedback", ...}`,
  written with one `write` under a file lock (`<file>.lock`), so processes sharing a file
  never interleave; a torn last line (a crash mid-write) is skipped by readers and sealed
  off with a newline by the next writer. Feedback lines are fsynced; exchange lines are
  flushed to the OS (a machine crash may lose the last few exchanges, never feedback).
- Feedback on a response id that already has some replaces it: the last event wins
  (by time), in the store and in the export.
- Retention: the owner of a file rewrites it (atomically: temp file + rename) when it holds
  more than `max_exchanges` exchanges, dropping the oldest *unrated* first, and drops
  exchanges and feedback older than `retention_days`.
- Replicas: each replica appends only to its own file. When `data_dir` is a shared volume,
  feedback can reach any replica (an unknown id makes it read the other replicas' new
  lines) and an export reads every file. Readers take no lock: they read whole lines, and a
  rewrite replaces the file atomically, so exporting while servers run is safe.

The export
----------
`export_records` turns the feedback into training records: positively rated exchanges
(`rating >= min_rating`) keep their answer, corrected ones get the correction as the answer,
anything else (negative or neutral without a correction) is left out. Formats:

- `chat`: `{"messages": [system?, ...turns, {"role": "assistant", ...}], "metadata": {...}}`,
  for `lorag train --data` (training's loader ignores the extra `metadata` key). The system
  message is the domain's system prompt as served; retrieved context is not included.
- `qa`: `{"question", "answer", "metadata"}` for single-turn exchanges, for
  `lorag train --qa FILE --domain D`, which re-retrieves context and renders it through the
  shared prompt module, as the server does. Use it for domains with an index.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from retrieval.prompt import build_messages
from serving.files import atomic_write
from serving.settings import FeedbackSettings

log = logging.getLogger("lorag.serving")

FEEDBACK_FOLDER = "feedback"
RATING_MIN, RATING_MAX = -2, 2
ExportFormat = Literal["chat", "qa"]
_AGE_CHECK_INTERVAL_S = 3600.0


def _now() -> datetime:
    return datetime.now(UTC)


class FeedbackStoreError(RuntimeError):
    """The feedback store cannot be read or written."""


class UnknownResponseError(LookupError):
    """No recorded exchange has this response id (never served, or dropped by retention)."""


# Records --------------------------------------------------------------------------------------


class Exchange(BaseModel):
    """One answered chat request, as recorded for feedback."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["exchange"] = "exchange"
    response_id: str
    time: datetime = Field(default_factory=_now)
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
    time: datetime = Field(default_factory=_now)
    rating: int | None = Field(None, ge=RATING_MIN, le=RATING_MAX)
    correction: str | None = None
    comment: str | None = None
    api_key: str | None = None


_LINE = TypeAdapter(Annotated[Exchange | FeedbackEvent, Field(discriminator="type")])


def feedback_folder(data_dir: Path) -> Path:
    """Where a server with `serving.data_dir = data_dir` keeps its feedback files."""
    return Path(data_dir) / FEEDBACK_FOLDER


def replica_name(configured: str | None = None) -> str:
    """This replica's file name: the configured one, else the host name (made file-safe)."""
    if configured:
        return configured
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).strip(".-")
    return host or "replica"


def _line_bytes(record: BaseModel) -> bytes:
    return record.model_dump_json(exclude_none=False).encode() + b"\n"


def _complete_lines(handle: Any) -> Iterator[tuple[int, bytes]]:
    """`(end offset, line)` for each newline-terminated line from the handle's position
    (blank ones included)."""
    offset = handle.tell()
    for line in handle:
        if not line.endswith(b"\n"):
            return  # a line still being written, or torn by a crash
        offset += len(line)
        yield offset, line


# The store ------------------------------------------------------------------------------------


@dataclass
class _FileIndex:
    """What this process knows of one feedback file: the ids in it, up to `offset`."""

    inode: int = -1
    offset: int = 0
    exchanges: dict[str, float] = field(default_factory=dict)  # response id -> epoch seconds
    rated: set[str] = field(default_factory=set)


class FeedbackStore:
    """This replica's feedback file, and a read index over every replica's file.

    Blocking calls (file I/O): from async code run them in a worker thread. Thread-safe;
    several processes may share a file (the file lock serialises their writes).
    """

    def __init__(self, folder: Path, settings: FeedbackSettings | None = None) -> None:
        self.settings = settings or FeedbackSettings()
        self.folder = Path(folder)
        self.path = self.folder / f"{replica_name(self.settings.replica)}.jsonl"
        self._lock = threading.RLock()
        self._file_lock = FileLock(str(self.path) + ".lock", timeout=30)
        self._indexes: dict[Path, _FileIndex] = {}
        self._last_age_check = 0.0
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise FeedbackStoreError(
                f"{self.folder}: cannot create the feedback folder: {err}"
            ) from err
        self.compact()

    # Reading --------------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Read the lines appended to every replica's file since the last refresh."""
        paths = set(self.folder.glob("*.jsonl")) | {self.path}
        for gone in set(self._indexes) - paths:
            del self._indexes[gone]
        for path in sorted(paths):
            self._tail(path, self._indexes.setdefault(path, _FileIndex()))

    def _tail(self, path: Path, index: _FileIndex) -> None:
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            self._indexes[path] = _FileIndex()
            return
        with handle:
            stat = os.fstat(handle.fileno())
            if stat.st_ino != index.inode or stat.st_size < index.offset:
                index.inode, index.offset = stat.st_ino, 0  # new or rewritten file
                index.exchanges.clear()
                index.rated.clear()
            if stat.st_size == index.offset:
                return
            handle.seek(index.offset)
            for offset, line in _complete_lines(handle):
                index.offset = offset
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    kind, response_id = obj.get("type"), obj["response_id"]
                    if kind == "exchange":
                        index.exchanges[response_id] = datetime.fromisoformat(
                            obj["time"]
                        ).timestamp()
                    elif kind == "feedback":
                        index.rated.add(response_id)
                except (ValueError, KeyError, TypeError, AttributeError):
                    log.warning("%s: skipping a malformed feedback line at byte %d", path, offset)

    def _known(self, response_id: str) -> bool:
        return any(response_id in index.exchanges for index in self._indexes.values())

    def _is_rated(self, response_id: str) -> bool:
        return any(response_id in index.rated for index in self._indexes.values())

    def has_exchange(self, response_id: str) -> bool:
        """Whether any replica's file records the response `response_id`."""
        with self._lock:
            if not self._known(response_id):
                self._refresh()
            return self._known(response_id)

    # Writing --------------------------------------------------------------------------------

    def _append(self, record: BaseModel, sync: bool) -> None:
        data = _line_bytes(record)
        try:
            with self._file_lock, self.path.open("a+b") as out:
                out.seek(0, os.SEEK_END)
                if out.tell() > 0:
                    out.seek(-1, os.SEEK_END)
                    if out.read(1) != b"\n":
                        data = b"\n" + data  # seal off a line torn by a crash
                out.write(data)
                out.flush()
                if sync:
                    os.fsync(out.fileno())
        except OSError as err:  # filelock's Timeout is an OSError too
            raise FeedbackStoreError(f"{self.path}: cannot write feedback: {err}") from err

    def record_exchange(self, exchange: Exchange) -> None:
        """Append an answered exchange (it can receive feedback from now on)."""
        with self._lock:
            self._append(exchange, sync=False)
            own = self._indexes.setdefault(self.path, _FileIndex())
            own.exchanges[exchange.response_id] = exchange.time.timestamp()
            if self._needs_compaction(own):
                self.compact()

    def add_feedback(self, event: FeedbackEvent) -> bool:
        """Append feedback on a recorded response; True when it replaces earlier feedback.

        Raises `UnknownResponseError` when no replica's file records the response.
        """
        with self._lock:
            self._refresh()  # other processes' and replicas' latest lines, for `replaced` too
            if not self._known(event.response_id):
                raise UnknownResponseError(event.response_id)
            replaced = self._is_rated(event.response_id)
            self._append(event, sync=True)
            self._indexes.setdefault(self.path, _FileIndex()).rated.add(event.response_id)
            return replaced

    # Retention ------------------------------------------------------------------------------

    def _cutoff(self) -> float | None:
        days = self.settings.retention_days
        return None if days is None else (_now() - timedelta(days=days)).timestamp()

    def _needs_compaction(self, own: _FileIndex) -> bool:
        slack = max(10, self.settings.max_exchanges // 10)
        if len(own.exchanges) > self.settings.max_exchanges + slack:
            return True
        cutoff = self._cutoff()
        if cutoff is None or time.monotonic() - self._last_age_check < _AGE_CHECK_INTERVAL_S:
            return False
        self._last_age_check = time.monotonic()
        return bool(own.exchanges) and min(own.exchanges.values()) < cutoff

    def compact(self) -> tuple[int, int]:
        """Apply retention to this replica's file; returns (lines kept, lines dropped).

        Keeps the newest `max_exchanges` exchanges younger than `retention_days`, rated ones
        first (rated on any replica), and the last feedback event per kept response
        (feedback on other replicas' responses is kept while it is young enough).
        """
        with self._lock:
            self._last_age_check = time.monotonic()
            self._refresh()
            rated_anywhere = set().union(*(index.rated for index in self._indexes.values()))
            try:
                with self._file_lock:
                    if not self.path.is_file():
                        return 0, 0
                    kept, dropped = self._rewrite(rated_anywhere)
            except OSError as err:
                raise FeedbackStoreError(f"{self.path}: cannot apply retention: {err}") from err
            if dropped:
                self._indexes[self.path] = _FileIndex()
                self._tail(self.path, self._indexes[self.path])
                log.info("%s: retention dropped %d lines, kept %d", self.path, dropped, kept)
            return kept, dropped

    def _rewrite(self, rated_anywhere: set[str]) -> tuple[int, int]:
        """Under the file lock: rewrite the file without what retention drops."""
        cutoff = self._cutoff()
        exchanges: list[tuple[int, str, float]] = []  # (line number, id, time)
        feedback: dict[str, tuple[int, float]] = {}  # id -> (line number, time) of the last
        lines: list[bytes] = []
        consumed = malformed = 0
        with self.path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            for consumed, line in _complete_lines(handle):
                try:
                    record = _LINE.validate_json(line)
                except ValidationError:
                    malformed += 1  # dropped by the rewrite
                    continue
                number = len(lines)
                lines.append(line)
                moment = record.time.timestamp()
                if isinstance(record, Exchange):
                    exchanges.append((number, record.response_id, moment))
                else:
                    last = feedback.get(record.response_id)
                    if last is None or moment >= last[1]:
                        feedback[record.response_id] = (number, moment)
        torn = 1 if size > consumed else 0  # a torn last line: dropped by the rewrite
        own_ids = {response_id for _, response_id, _ in exchanges}
        young = [e for e in exchanges if cutoff is None or e[2] >= cutoff]
        limit = self.settings.max_exchanges
        if len(young) > limit:
            young.sort(key=lambda e: (e[1] in rated_anywhere, e[2]), reverse=True)
            young = young[:limit]
        kept_ids = {response_id for _, response_id, _ in young}
        keep = {number for number, _, _ in young} | {
            number
            for response_id, (number, moment) in feedback.items()
            if (cutoff is None or moment >= cutoff)
            and (response_id in kept_ids or response_id not in own_ids)
        }
        total = len(lines) + malformed + torn
        if len(keep) == total and sum(map(len, lines)) == size:
            return total, 0
        with atomic_write(self.path, "wb", prefix=".feedback-") as out:
            out.writelines(lines[number] for number in sorted(keep))
        return len(keep), total - len(keep)

    def close(self) -> None:
        with self._lock:
            self._indexes.clear()


# Export ---------------------------------------------------------------------------------------


class ExportOptions(BaseModel):
    """Which feedback becomes training data, and in which format."""

    model_config = ConfigDict(extra="forbid")

    domain: str | None = None
    adapter: str | None = None
    min_rating: int = Field(1, ge=1, le=RATING_MAX)
    since: datetime | None = Field(None, description="only feedback given at or after this")
    format: ExportFormat = "chat"


class ExportSummary(BaseModel):
    records: int = 0
    by_domain: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="domain ('-' for none) -> kind -> records"
    )
    excluded: dict[str, int] = Field(default_factory=dict, description="reason -> feedback")
    files: int = 0
    malformed_lines: int = 0


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
            for _, line in _complete_lines(handle):
                if not line.strip():
                    continue
                try:
                    record = _LINE.validate_json(line)
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


def _conversation_problem(messages: list[dict[str, str]]) -> str | None:
    """Why training's chat loader would refuse `messages` (mirrors `training.data`)."""
    roles = [m.get("role") for m in messages]
    if any(role not in ("system", "user", "assistant") for role in roles):
        return "unsupported role"
    if "system" in roles[1:]:
        return "system message not first"
    if "user" not in roles or roles[-1] != "assistant":
        return "no user turn or no final answer"
    if any(not (m.get("content") or "").strip() for m in messages):
        return "empty message"
    return None


def _metadata(exchange: Exchange, event: FeedbackEvent, kind: str) -> dict[str, Any]:
    return {
        "response_id": exchange.response_id,
        "kind": kind,
        "rating": event.rating,
        "comment": event.comment,
        "model": exchange.model,
        "domain": exchange.domain,
        "adapter": exchange.adapter,
        "adapter_version": exchange.adapter_version,
        "index_version": exchange.index_version,
        "sources": exchange.sources,
        "answered_at": exchange.time.isoformat(),
        "rated_at": event.time.isoformat(),
    }


def build_records(
    stored: StoredFeedback, options: ExportOptions
) -> tuple[list[dict[str, Any]], ExportSummary]:
    """Training records of the feedback that passes `options`, oldest exchange first."""
    summary = ExportSummary(files=stored.files, malformed_lines=stored.malformed_lines)
    excluded: dict[str, int] = defaultdict(int)
    by_domain: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    chosen: list[tuple[Exchange, dict[str, Any]]] = []
    for response_id, event in stored.feedback.items():
        exchange = stored.exchanges.get(response_id)
        if exchange is None:
            excluded["exchange_dropped"] += 1
            continue
        if options.domain is not None and exchange.domain != options.domain:
            continue
        if options.adapter is not None and exchange.adapter != options.adapter:
            continue
        if options.since is not None and event.time < options.since:
            continue
        if event.correction and event.correction.strip():
            kind, answer = "correction", event.correction.strip()
        elif event.rating is not None and event.rating >= options.min_rating:
            kind, answer = "positive", exchange.answer.strip()
        else:
            negative = event.rating is not None and event.rating < 0
            excluded["negative_without_correction" if negative else "below_min_rating"] += 1
            continue
        turns = build_messages(exchange.messages, [], exchange.system_prompt)
        messages = [*turns, {"role": "assistant", "content": answer}]
        if _conversation_problem(messages):
            excluded["not_trainable"] += 1
            continue
        metadata = _metadata(exchange, event, kind)
        if options.format == "qa":
            if [m["role"] for m in turns if m["role"] != "system"] != ["user"]:
                excluded["multi_turn_for_qa"] += 1
                continue
            record = {"question": turns[-1]["content"], "answer": answer, "metadata": metadata}
        else:
            record = {"messages": messages, "metadata": metadata}
        chosen.append((exchange, record))
        by_domain[exchange.domain or "-"][kind] += 1
    chosen.sort(key=lambda item: (item[0].time, item[0].response_id))
    summary.records = len(chosen)
    summary.by_domain = {domain: dict(kinds) for domain, kinds in sorted(by_domain.items())}
    summary.excluded = dict(sorted(excluded.items()))
    return [record for _, record in chosen], summary


def export_records(
    folder: Path, options: ExportOptions
) -> tuple[list[dict[str, Any]], ExportSummary]:
    """Read a feedback folder and build its training records (see `build_records`)."""
    return build_records(read_folder(folder), options)


def to_jsonl(records: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def write_jsonl(text: str, path: Path) -> None:
    """Write `text` to `path` atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as out:
        out.write(text)


_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """An ISO date or date-time (UTC unless it says), or an age like `7d`, `12h`, `30m`."""
    value = text.strip()
    if match := _AGE.fullmatch(value):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
        return (now or _now()) - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"since {text!r}: give an ISO date or time (2026-05-01, 2026-05-01T12:00:00Z) "
            "or an age like 7d, 12h, 30m"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
