"""Changes to what the server serves: adapters, domains, documents, re-index jobs, and the
convergence of this replica on the shared state.

Every change is written to the state store first-class, so that a restart or another
replica ends up serving the same thing. Changes are serialised per process by one lock.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime
from typing import Any

from contracts.manifest import AdapterCompatibilityError
from retrieval.errors import RetrievalError
from serving.adapters import AdapterPathError, check_manifest, resolve_adapter_dir
from serving.context import ServerContext
from serving.engine.base import AdapterCapacityError, EngineError, LoadedAdapter
from serving.errors import APIError, bad_request, conflict, not_found
from serving.paths import relative_parts
from serving.protocol import DomainCreate, DomainUpdate, JobInfo
from serving.state import AdapterRecord, DomainRecord, ServingState

log = logging.getLogger("lorag.serving")


class ControlPlane:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self._lock = asyncio.Lock()
        self._failed: set[tuple[str, int]] = set()  # versions a sync could not load

    # Adapters ----------------------------------------------------------------------------

    async def _checked_folder(self, relative: str):
        ctx = self.ctx
        try:
            folder = resolve_adapter_dir(ctx.settings.adapters_root, relative)
            await asyncio.to_thread(
                check_manifest, folder, ctx.base_fingerprint, ctx.base_model_id, ctx.prompt_format
            )
        except AdapterPathError as err:
            raise bad_request(str(err), param="path", code="invalid_adapter_path") from err
        except AdapterCompatibilityError as err:
            raise bad_request(str(err), param="path", code="incompatible_adapter") from err
        return folder

    async def load_adapter(
        self, name: str, relative: str
    ) -> tuple[LoadedAdapter, LoadedAdapter | None]:
        """Load `relative` as the next version of `name`; returns (new, replaced)."""
        if self.ctx.is_base(name):
            raise bad_request(f"{name!r} names the base model; choose another name", param="name")
        folder = await self._checked_folder(relative)
        relative = "/".join(relative_parts(relative))  # as stored: normalised
        async with self._lock:

            def allocate(state: ServingState) -> None:
                state.adapter_versions[name] = state.adapter_versions.get(name, 0) + 1

            allocated = await self._update(allocate)
            version = allocated.adapter_versions[name]
            try:
                old = await self.ctx.registry.put(name, version, folder)
            except AdapterCapacityError as err:
                raise conflict(str(err), code="adapter_capacity") from err
            except EngineError as err:
                raise bad_request(
                    f"the engine could not load adapter {relative!r}: {err}",
                    param="path",
                    code="adapter_load_failed",
                ) from err

            def commit(state: ServingState) -> None:
                current = state.adapters.get(name)
                if current is None or current.version <= version:
                    state.adapters[name] = AdapterRecord(name=name, version=version, path=relative)

            await self._update(commit)
            return self.ctx.registry.current(name), old

    async def unload_adapter(self, name: str) -> LoadedAdapter:
        async with self._lock:
            if self.ctx.registry.current(name) is None:
                raise not_found(f"no adapter named {name!r} is loaded", code="adapter_not_found")
            await self._update(lambda state: state.adapters.pop(name, None))
            dropped = await self.ctx.registry.drop(name)
            assert dropped is not None
            return dropped

    # Domains -----------------------------------------------------------------------------

    def _check_domain_name(self, name: str) -> None:
        if self.ctx.is_base(name):
            raise bad_request(
                f"{name!r} names the base model; choose another domain name", param="name"
            )

    async def create_domain(self, spec: DomainCreate) -> DomainRecord:
        self._check_domain_name(spec.name)
        async with self._lock:
            if spec.name in (await self._read()).domains:
                raise conflict(f"domain {spec.name!r} already exists", code="domain_exists")
            record = DomainRecord(**spec.model_dump())

            def create(state: ServingState) -> None:
                state.domains[spec.name] = record

            await self._update(create)
            return record

    async def update_domain(self, name: str, change: DomainUpdate) -> DomainRecord:
        async with self._lock:
            current = (await self._read()).domains.get(name)
            if current is None:
                raise not_found(f"no domain named {name!r}", code="domain_not_found")
            fields = change.model_dump(exclude_unset=True)
            if fields.get("index", True) is None:
                raise bad_request("index: must be true or false", param="index")
            record = current.model_copy(update={**fields, "updated_at": datetime.now(UTC)})
            record = DomainRecord.model_validate(record.model_dump())

            def update(state: ServingState) -> None:
                state.domains[name] = record

            await self._update(update)
            return record

    async def delete_domain(self, name: str, purge: bool) -> DomainRecord:
        async with self._lock:
            current = (await self._read()).domains.get(name)
            if current is None:
                raise not_found(f"no domain named {name!r}", code="domain_not_found")
            await self._update(lambda state: state.domains.pop(name, None))
        if purge:
            await asyncio.to_thread(self.ctx.documents.purge, name)
            try:
                await self.ctx.search.delete(name)
            except RetrievalError as err:
                log.warning("domain %s deleted, but its index could not be: %s", name, err)
        return current

    def domain(self, name: str) -> DomainRecord:
        record = self.ctx.state.domains.get(name)
        if record is None:
            raise not_found(f"no domain named {name!r}", param="name", code="domain_not_found")
        return record

    # Re-index ----------------------------------------------------------------------------

    def start_reindex(self, name: str) -> JobInfo:
        domain = self.domain(name)
        if not domain.index:
            raise conflict(
                f"domain {name!r} has index: false; set index: true first",
                code="domain_without_index",
            )
        folder = self.ctx.documents.folder(name)
        if not self.ctx.documents.list(name):
            raise conflict(
                f"domain {name!r} has no documents; upload some first", code="no_documents"
            )

        async def work(cancel: threading.Event) -> dict[str, Any]:
            report = await self.ctx.search.reindex(name, folder, cancel)
            return {
                "index_version": report.index_version,
                "collection": report.collection,
                "documents_total": report.documents_total,
                "chunks_total": report.chunks_total,
                "chunks_embedded": report.chunks_embedded,
                "added": len(report.added),
                "updated": len(report.updated),
                "deleted": len(report.deleted),
                "skipped": [{"path": s.path, "reason": s.reason} for s in report.skipped],
                "seconds": round(report.seconds, 3),
            }

        return self.ctx.jobs.start("reindex", name, work)

    # State -------------------------------------------------------------------------------

    async def _read(self) -> ServingState:
        self.ctx.state = await asyncio.to_thread(self.ctx.store.read)
        return self.ctx.state

    async def _update(self, mutate) -> ServingState:
        self.ctx.state = await asyncio.to_thread(self.ctx.store.update, mutate)
        return self.ctx.state

    async def seed(self) -> None:
        """Create the domains and load the adapters the settings declare, unless stored."""
        settings = self.ctx.settings
        state = await self._read()
        missing = {n: s for n, s in settings.domains.items() if n not in state.domains}
        if missing:

            def add(state: ServingState) -> None:
                for name, spec in missing.items():
                    state.domains.setdefault(name, DomainRecord(name=name, **spec.model_dump()))

            await self._update(add)
        for name, relative in settings.adapters.items():
            if name not in state.adapters:
                try:
                    await self.load_adapter(name, relative)
                except APIError as err:
                    raise RuntimeError(
                        f"serving.adapters.{name}: cannot load {relative!r}: {err.message}"
                    ) from err

    async def sync(self) -> None:
        """Converge on the stored state: load, replace and unload adapters to match it."""
        async with self._lock:
            state = await self._read()
            registry = self.ctx.registry
            for name, record in state.adapters.items():
                current = registry.current(name)
                if current is not None and current.version == record.version:
                    continue
                if (name, record.version) in self._failed:
                    continue
                try:
                    folder = resolve_adapter_dir(self.ctx.settings.adapters_root, record.path)
                    await asyncio.to_thread(
                        check_manifest,
                        folder,
                        self.ctx.base_fingerprint,
                        self.ctx.base_model_id,
                        self.ctx.prompt_format,
                    )
                    await registry.put(name, record.version, folder)
                except (AdapterPathError, AdapterCompatibilityError, EngineError) as err:
                    self._failed.add((name, record.version))
                    log.error(
                        "cannot serve adapter %s v%d from the shared state (%s): %s",
                        name,
                        record.version,
                        record.path,
                        err,
                    )
            for name in registry.names():
                if name not in state.adapters:
                    await registry.drop(name)

    async def sync_forever(self, interval_s: float) -> None:
        """Re-read the store every `interval_s` seconds (a replica's background task)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("state sync failed; retrying in %.1fs", interval_s)
