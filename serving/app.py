"""The FastAPI application: `create_app(settings, retrieval_settings, model_path)`.

Everything the server holds (engine, tokenizer, retriever, state store, adapter registry,
jobs) is created by the app's lifespan and torn down with it; nothing lives in module
globals, so several apps can run in one process (as the tests do).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from transformers import AutoTokenizer

from contracts.manifest import fingerprint_model
from retrieval.prompt import resolve_layout
from retrieval.settings import RetrievalSettings
from serving.adapters import AdapterRegistry
from serving.chat import ChatService
from serving.context import ServerContext
from serving.control import ControlPlane
from serving.documents import DocumentStore
from serving.engine.base import Engine
from serving.errors import UnexpectedErrorMiddleware, error_body, install_error_handlers
from serving.feedback.records import feedback_folder
from serving.feedback.store import FeedbackStore
from serving.jobs import JobManager
from serving.limits import BodyLimitMiddleware
from serving.metrics import Metrics
from serving.routers import admin, feedback, openai, ops
from serving.search import SearchService
from serving.settings import ServingSettings
from serving.state import StateStoreError, open_state_store

log = logging.getLogger("lorag.serving")

UPLOAD_PATH_SUFFIX = "/documents"


def create_app(
    settings: ServingSettings,
    retrieval_settings: RetrievalSettings,
    model_path: Path,
    *,
    engine: Engine | None = None,
    prompt_layout: str = "auto",
) -> FastAPI:
    """The lorag server for the base model at `model_path`.

    `prompt_layout` is `model.prompt_layout`: `chat`, `completion` or `auto` (decided from
    the model folder, as training decides it; see `retrieval.prompt.resolve_layout`).

    The lifespan starts the engine (`serving.engine.create_engine`) unless one is given;
    a given engine must already be started and is left running at shutdown (its owner
    stops it). `/ready` answers 200 once the engine runs and the shared state is restored.
    """
    model_path = Path(model_path)
    layout = resolve_layout(prompt_layout, model_path)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.api_keys:
            log.warning(
                "NO API KEYS CONFIGURED: the lorag API, admin routes included, is open to "
                "anyone who can reach %s:%s. Set serving.api_keys for any shared deployment.",
                settings.host,
                settings.port,
            )
        own_engine = engine is None
        active = engine
        retriever = None
        store = None
        feedback_store = None
        ctx = None
        sync_task = None
        try:
            if active is None:
                from serving.engine import create_engine

                active = create_engine(settings.engine, model_path)
                started = time.perf_counter()
                await active.start()
                log.info("engine %s started in %.1fs", active.name, time.perf_counter() - started)
            tokenizer = await asyncio.to_thread(AutoTokenizer.from_pretrained, model_path)
            fingerprint = await asyncio.to_thread(fingerprint_model, model_path)
            from retrieval import Retriever

            retriever = await asyncio.to_thread(Retriever, retrieval_settings)
            store = await asyncio.to_thread(
                open_state_store,
                settings.state_store,
                settings.data_dir,
                retrieval_settings.qdrant,
                settings.state_collection,
            )
            ctx = ServerContext(
                settings=settings,
                retrieval_settings=retrieval_settings,
                model_path=model_path,
                base_model_id=settings.served_model_name or model_path.name,
                base_fingerprint=fingerprint,
                max_model_len=settings.engine.max_model_len,
                engine=active,
                tokenizer=tokenizer,
                metrics=metrics,
                registry=AdapterRegistry(active, metrics, settings.limits.adapter_capacity_wait_s),
                search=SearchService(retriever, metrics),
                store=store,
                documents=DocumentStore(settings.data_dir / "documents"),
                jobs=JobManager(lambda job: metrics.reindex_jobs.labels(job.status).inc()),
                state=await asyncio.to_thread(store.read),
                layout=layout,
            )
            if settings.feedback.enabled:
                feedback_store = await asyncio.to_thread(
                    FeedbackStore, feedback_folder(settings.data_dir), settings.feedback
                )
            control = ControlPlane(ctx)
            await control.sync()  # restore the stored adapters
            await control.seed()  # then the ones the settings declare
            app.state.ctx = ctx
            app.state.feedback = feedback_store
            app.state.chat = ChatService(ctx, feedback_store)
            app.state.control = control
            sync_task = asyncio.create_task(control.sync_forever(settings.sync_interval_s))
            app.state.ready = True
            log.info(
                "lorag serving %s: %d domains, %d adapters",
                ctx.base_model_id,
                len(ctx.state.domains),
                len(ctx.registry.names()),
            )
            yield
        finally:
            app.state.ready = False
            if sync_task is not None:
                sync_task.cancel()
                await asyncio.gather(sync_task, return_exceptions=True)
            if ctx is not None:
                await ctx.jobs.close(timeout_s=settings.shutdown_grace_s)
                if not own_engine:  # an engine of ours goes whole; a lent one is left clean
                    await _bounded(ctx.registry.close(), "removing the adapters")
            app.state.ctx = None
            app.state.feedback = None
            if feedback_store is not None:
                feedback_store.close()
            if store is not None:
                store.close()
            if retriever is not None:
                await asyncio.to_thread(retriever.close)
            if own_engine and active is not None:
                await active.shutdown()

    app = FastAPI(
        title="lorag",
        summary="OpenAI-compatible RAG chat with per-domain LoRA adapters",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.ready = False
    app.state.ctx = None
    app.state.feedback = None
    install_error_handlers(app)

    @app.exception_handler(StateStoreError)
    async def _state_unavailable(request: Request, err: StateStoreError) -> JSONResponse:
        log.error("state store error on %s %s: %s", request.method, request.url.path, err)
        return JSONResponse(
            error_body(503, f"the serving state store failed: {err}", code="state_unavailable"),
            status_code=503,
        )

    limits = settings.limits

    def limit_for(path: str) -> int:
        if path.startswith("/admin/domains/") and path.endswith(UPLOAD_PATH_SUFFIX):
            return limits.max_upload_bytes + 64 * 1024  # room for the multipart framing
        return limits.max_body_bytes

    app.add_middleware(HTTPMetricsMiddleware, metrics=metrics)
    app.add_middleware(BodyLimitMiddleware, limit_for=limit_for)
    app.add_middleware(UnexpectedErrorMiddleware)  # added last: the outermost of ours
    app.include_router(ops.router)
    app.include_router(openai.router)
    app.include_router(admin.router)
    app.include_router(feedback.router)
    return app


SHUTDOWN_STEP_S = 10.0


async def _bounded(step, what: str) -> None:
    """Run a shutdown step, but never let it hold the process: an engine whose worker
    processes already died (Ctrl-C reaches the whole process group) never answers."""
    try:
        await asyncio.wait_for(step, SHUTDOWN_STEP_S)
    except TimeoutError:
        log.warning("shutdown: gave up %s after %.0f s", what, SHUTDOWN_STEP_S)
    except Exception:
        log.exception("shutdown: %s failed", what)


class HTTPMetricsMiddleware:
    """Count requests by route template (not raw path, to bound label values) and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.http_requests.labels(path, str(status)).inc()
