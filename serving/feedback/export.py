"""Feedback as training data for an adapter's next version (see `serving.feedback`)."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.conversation import conversation_problem
from retrieval.prompt import build_messages
from serving.feedback.records import (
    RATING_MAX,
    Exchange,
    FeedbackEvent,
    StoredFeedback,
    read_folder,
    utc_now,
)
from serving.files import atomic_write

ExportFormat = Literal["chat", "qa"]


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
        if conversation_problem(messages):
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
        return (now or utc_now()) - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"since {text!r}: give an ISO date or time (2026-05-01, 2026-05-01T12:00:00Z) "
            "or an age like 7d, 12h, 30m"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
