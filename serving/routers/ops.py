"""Liveness, readiness and Prometheus metrics (no API key needed)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process answers (liveness)."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """200 once the engine has started and the state is restored; 503 before and at shutdown."""
    ctx = getattr(request.app.state, "ctx", None)
    if ctx is None or not request.app.state.ready:
        return JSONResponse({"ready": False}, status_code=503)
    return JSONResponse(
        {
            "ready": True,
            "engine": ctx.engine.name,
            "model": ctx.base_model_id,
            "adapters": len(ctx.registry.names()),
            "domains": len(ctx.state.domains),
        }
    )


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
