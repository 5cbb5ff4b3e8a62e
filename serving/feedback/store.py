"""The feedback store: this replica's append-only JSONL file, written under a file lock,
a read index over every replica's file, and retention (see `serving.feedback`)."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from filelock import FileLock
from pydantic import BaseModel, ValidationError

from serving.feedback.records import (
    LINE,
    Exchange,
    FeedbackEvent,
    FeedbackStoreError,
    UnknownResponseError,
    complete_lines,
    line_bytes,
    replica_name,
    utc_now,
)
from serving.files import atomic_write
from serving.settings import FeedbackSettings

log = logging.getLogger("lorag.serving")

_AGE_CHECK_INTERVAL_S = 3600.0


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
            for offset, line in complete_lines(handle):
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
        data = line_bytes(record)
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
        return None if days is None else (utc_now() - timedelta(days=days)).timestamp()

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
            for consumed, line in complete_lines(handle):
                try:
                    record = LINE.validate_json(line)
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
