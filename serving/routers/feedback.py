"""Feedback on answers (`POST /v1/feedback`, scope `chat`) and its export as training data
(`GET /admin/feedback/export`, scope `admin`). Storage and export rules: `serving.feedback`."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from serving.context import ServerContext
from serving.dependencies import Admin, ChatUser, get_context
from serving.errors import APIError, bad_request, not_found
from serving.feedback.export import (
    ExportFormat,
    ExportOptions,
    export_records,
    parse_since,
    to_jsonl,
)
from serving.feedback.records import (
    RATING_MAX,
    RATING_MIN,
    FeedbackEvent,
    FeedbackStoreError,
    UnknownResponseError,
)
from serving.feedback.store import FeedbackStore
from serving.protocol import RequestModel

router = APIRouter(tags=["feedback"])

SUMMARY_HEADER = "x-lorag-export-summary"


class FeedbackRequest(RequestModel):
    """A rating and/or a correction of one chat completion (`id` of the response)."""

    model_config = ConfigDict(extra="forbid")

    response_id: str = Field(min_length=1, max_length=128)
    rating: int | None = Field(
        None,
        ge=RATING_MIN,
        le=RATING_MAX,
        strict=True,
        description="-2..2: thumbs up is 1, thumbs down -1, 0 neutral",
    )
    correction: str | None = Field(None, description="a better answer; it replaces the answer")
    comment: str | None = Field(None, max_length=4000)


class FeedbackResponse(BaseModel):
    object: Literal["feedback"] = "feedback"
    response_id: str
    rating: int | None
    correction: str | None
    comment: str | None
    created_at: int
    replaced: bool = Field(description="true when it replaced earlier feedback on the response")


def get_feedback(
    request: Request, ctx: Annotated[ServerContext, Depends(get_context)]
) -> FeedbackStore:
    store = getattr(request.app.state, "feedback", None)
    if store is None:
        raise not_found(
            "feedback is disabled on this server (serving.feedback.enabled)",
            code="feedback_disabled",
        )
    return store


Feedback = Annotated[FeedbackStore, Depends(get_feedback)]


def _unavailable(err: Exception) -> APIError:
    return APIError(503, f"the feedback store failed: {err}", code="feedback_unavailable")


@router.post("/v1/feedback", response_model=FeedbackResponse)
async def post_feedback(
    user: ChatUser, body: FeedbackRequest, store: Feedback, request: Request
) -> JSONResponse:
    """Rate a response and/or correct it. Feedback on the same response again replaces the
    earlier one (last wins): 201 for the first, 200 for a replacement."""
    correction = body.correction.strip() if body.correction is not None else None
    if body.correction is not None and not correction:
        raise bad_request("correction: must not be blank", param="correction")
    if body.rating is None and correction is None:
        raise bad_request(
            f"give a rating ({RATING_MIN}..{RATING_MAX}) and/or a correction", param="rating"
        )
    event = FeedbackEvent(
        response_id=body.response_id,
        rating=body.rating,
        correction=correction,
        comment=body.comment,
        api_key=user.name or None,
    )
    try:
        replaced = await asyncio.to_thread(store.add_feedback, event)
    except UnknownResponseError as err:
        raise not_found(
            f"no response {body.response_id!r} is recorded for feedback (never served here, "
            "or older than serving.feedback.retention_days)",
            param="response_id",
            code="response_not_found",
        ) from err
    except (FeedbackStoreError, OSError) as err:
        raise _unavailable(err) from err
    request.app.state.metrics.feedback.labels(
        "none" if body.rating is None else str(body.rating)
    ).inc()
    reply = FeedbackResponse(
        response_id=event.response_id,
        rating=event.rating,
        correction=event.correction,
        comment=event.comment,
        created_at=int(event.time.timestamp()),
        replaced=replaced,
    )
    return JSONResponse(reply.model_dump(), status_code=200 if replaced else 201)


@router.get("/admin/feedback/export", response_class=Response)
async def export_feedback(
    admin: Admin,
    store: Feedback,
    domain: Annotated[str | None, Query(description="only this domain's exchanges")] = None,
    adapter: Annotated[str | None, Query(description="only exchanges this adapter served")] = None,
    min_rating: Annotated[int, Query(ge=1, le=RATING_MAX)] = 1,
    since: Annotated[
        str | None, Query(description="feedback since an ISO date/time or an age (7d, 12h)")
    ] = None,
    format: Annotated[ExportFormat, Query(description="chat or qa JSONL")] = "chat",
) -> Response:
    """The rated exchanges of every replica's feedback file as training JSONL, the same as
    `lorag feedback export`; the summary is in the `x-lorag-export-summary` header."""
    try:
        moment = parse_since(since) if since else None
    except ValueError as err:
        raise bad_request(str(err), param="since") from err
    options = ExportOptions(
        domain=domain, adapter=adapter, min_rating=min_rating, since=moment, format=format
    )
    try:
        records, summary = await asyncio.to_thread(export_records, store.folder, options)
    except (FeedbackStoreError, OSError) as err:
        raise _unavailable(err) from err
    return Response(
        to_jsonl(records),
        media_type="application/x-ndjson",
        headers={SUMMARY_HEADER: summary.model_dump_json()},
    )
