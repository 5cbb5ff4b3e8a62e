"""Admin API (scope `admin`): adapters, domains, documents and re-index jobs."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import JSONResponse

from serving.context import ServerContext
from serving.dependencies import Admin, Context, Control
from serving.documents import DocumentTooLargeError
from serving.errors import APIError, bad_request, conflict, not_found
from serving.jobs import JobConflictError
from serving.paths import UnsafePathError
from serving.protocol import (
    AdapterInfo,
    AdapterLoadRequest,
    AdapterLoadResponse,
    DocumentInfo,
    DomainCreate,
    DomainInfo,
    DomainUpdate,
    JobInfo,
)
from serving.state import DomainRecord

router = APIRouter(prefix="/admin", tags=["admin"])


def _adapter_info(ctx: ServerContext, name: str) -> AdapterInfo:
    adapter = ctx.registry.current(name)
    if adapter is None:
        raise not_found(f"no adapter named {name!r} is loaded", code="adapter_not_found")
    record = ctx.state.adapters.get(name)
    return AdapterInfo(
        name=name,
        version=adapter.version,
        path=record.path if record else str(adapter.path),
        in_flight=ctx.registry.in_flight(adapter),
        draining_versions=[a.version for a in ctx.registry.draining() if a.name == name],
    )


def _domain_info(ctx: ServerContext, record: DomainRecord) -> DomainInfo:
    return DomainInfo(
        **record.model_dump(exclude={"updated_at"}),
        documents=ctx.documents.count(record.name),
        adapter_loaded=bool(record.adapter and ctx.registry.current(record.adapter)),
    )


# Adapters ----------------------------------------------------------------------------------


@router.get("/adapters")
async def list_adapters(admin: Admin, ctx: Context) -> dict:
    return {"object": "list", "data": [_adapter_info(ctx, n) for n in ctx.registry.names()]}


@router.post("/adapters", response_model=AdapterLoadResponse)
async def load_adapter(
    admin: Admin, body: AdapterLoadRequest, ctx: Context, control: Control
) -> JSONResponse:
    """Load an adapter folder (relative to the adapters root) as a name's next version.

    Loading a name that is already served replaces it atomically: running requests finish
    on the old version, new ones get the new version. 201 for a new name, 200 for a swap.
    """
    _, old = await control.load_adapter(body.name, body.path)
    info = AdapterLoadResponse(
        **_adapter_info(ctx, body.name).model_dump(),
        replaced_version=old.version if old else None,
    )
    return JSONResponse(info.model_dump(), status_code=200 if old else 201)


@router.get("/adapters/{name}", response_model=AdapterInfo)
async def get_adapter(admin: Admin, name: str, ctx: Context) -> AdapterInfo:
    return _adapter_info(ctx, name)


@router.delete("/adapters/{name}")
async def unload_adapter(admin: Admin, name: str, ctx: Context, control: Control) -> dict:
    """Stop serving an adapter; requests running on it finish first, then it leaves the engine."""
    adapter = await control.unload_adapter(name)
    return {
        "name": name,
        "version": adapter.version,
        "deleted": True,
        "in_flight": ctx.registry.in_flight(adapter),
    }


# Domains -----------------------------------------------------------------------------------


@router.get("/domains")
async def list_domains(admin: Admin, ctx: Context) -> dict:
    records = sorted(ctx.state.domains.values(), key=lambda d: d.name)
    return {"object": "list", "data": [_domain_info(ctx, d) for d in records]}


@router.post("/domains", status_code=201, response_model=DomainInfo)
async def create_domain(admin: Admin, body: DomainCreate, ctx: Context, control: Control):
    return _domain_info(ctx, await control.create_domain(body))


@router.get("/domains/{name}", response_model=DomainInfo)
async def get_domain(admin: Admin, name: str, ctx: Context, control: Control) -> DomainInfo:
    return _domain_info(ctx, control.domain(name))


@router.patch("/domains/{name}", response_model=DomainInfo)
async def update_domain(
    admin: Admin, name: str, body: DomainUpdate, ctx: Context, control: Control
) -> DomainInfo:
    return _domain_info(ctx, await control.update_domain(name, body))


@router.delete("/domains/{name}")
async def delete_domain(
    admin: Admin,
    name: str,
    control: Control,
    purge: Annotated[bool, Query(description="also delete its documents and index")] = False,
) -> dict:
    await control.delete_domain(name, purge)
    return {"name": name, "deleted": True, "purged": purge}


# Documents ---------------------------------------------------------------------------------


@router.get("/domains/{name}/documents")
async def list_documents(admin: Admin, name: str, ctx: Context, control: Control) -> dict:
    control.domain(name)
    files = await asyncio.to_thread(ctx.documents.list, name)
    return {"object": "list", "data": [DocumentInfo(path=p, bytes=n) for p, n in files]}


@router.post("/domains/{name}/documents", status_code=201, response_model=DocumentInfo)
async def upload_document(
    admin: Admin,
    name: str,
    ctx: Context,
    control: Control,
    file: Annotated[UploadFile, File(description="the document")],
    path: Annotated[str | None, Form(description="relative path in the domain")] = None,
) -> DocumentInfo:
    """Store a document under the domain's folder (replacing one at the same path)."""
    control.domain(name)
    relative = path or file.filename or ""
    try:
        saved, size, digest = await asyncio.to_thread(
            ctx.documents.save, name, relative, file.file, ctx.settings.limits.max_upload_bytes
        )
    except UnsafePathError as err:
        raise bad_request(str(err), param="path", code="invalid_path") from err
    except DocumentTooLargeError as err:
        raise APIError(413, str(err), param="file", code="document_too_large") from err
    return DocumentInfo(path=saved, bytes=size, sha256=digest)


@router.delete("/domains/{name}/documents/{path:path}")
async def delete_document(admin: Admin, name: str, path: str, ctx: Context, control: Control):
    control.domain(name)
    try:
        await asyncio.to_thread(ctx.documents.delete, name, path)
    except UnsafePathError as err:
        raise bad_request(str(err), param="path", code="invalid_path") from err
    except FileNotFoundError as err:
        raise not_found(f"domain {name!r} has no document {path!r}", param="path") from err
    return {"path": path, "deleted": True}


# Jobs --------------------------------------------------------------------------------------


@router.post("/domains/{name}/reindex", status_code=202, response_model=JobInfo)
async def reindex(admin: Admin, name: str, control: Control) -> JobInfo:
    """Re-index the domain's documents in the background; searches use the previous index
    until the new one is complete."""
    try:
        return control.start_reindex(name)
    except JobConflictError as err:
        raise conflict(str(err), code="job_running") from err


@router.get("/jobs")
async def list_jobs(admin: Admin, ctx: Context) -> dict:
    return {"object": "list", "data": ctx.jobs.list()}


@router.get("/jobs/{job_id}", response_model=JobInfo)
async def get_job(admin: Admin, job_id: str, ctx: Context) -> JobInfo:
    job = ctx.jobs.get(job_id)
    if job is None:
        raise not_found(f"no job {job_id!r}", code="job_not_found")
    return job
