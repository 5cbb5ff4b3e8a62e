"""The serving state every replica shares: domains and the adapter versions to serve.

Two stores with one interface: a JSON file (embedded mode; atomic replace under a file
lock, so processes on one machine or one shared volume never see half a file) and a
Qdrant collection (when Qdrant runs as a server; one point per domain, adapter and version
counter, so concurrent changes to different entities never overwrite each other).
Replicas re-read the store periodically and converge on it (see `serving.sync`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from filelock import FileLock
from pydantic import BaseModel, Field, ValidationError

from serving.files import atomic_write
from serving.settings import DomainSpec

_NAMESPACE = uuid.UUID("1b0c4f3e-7a52-4f4e-9b7c-2f6d0c2d8a11")


def _now() -> datetime:
    return datetime.now(UTC)


class StateStoreError(RuntimeError):
    """The state store cannot be read or written."""


class AdapterRecord(BaseModel):
    """The version of a named adapter every replica should serve."""

    name: str
    version: int = Field(ge=1)
    path: str  # relative to serving.adapters_root
    updated_at: datetime = Field(default_factory=_now)


class DomainRecord(DomainSpec):
    name: str
    updated_at: datetime = Field(default_factory=_now)


class ServingState(BaseModel):
    adapters: dict[str, AdapterRecord] = Field(default_factory=dict)
    domains: dict[str, DomainRecord] = Field(default_factory=dict)
    # The last version number given to each adapter name (never reused, even after unload).
    adapter_versions: dict[str, int] = Field(default_factory=dict)


Mutation = Callable[[ServingState], None]


class StateStore(Protocol):
    """Blocking calls: run them in a worker thread from async code."""

    def read(self) -> ServingState: ...

    def update(self, mutate: Mutation) -> ServingState:
        """Read, apply `mutate` (in place) and write back as one step; return the new state."""
        ...

    def close(self) -> None: ...


class FileStateStore:
    """`state.json` in the serving data folder: atomic replace, serialised by a file lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.path) + ".lock", timeout=30)

    def read(self) -> ServingState:
        if not self.path.is_file():
            return ServingState()
        try:
            return ServingState.model_validate_json(self.path.read_text())
        except (OSError, ValidationError) as err:
            raise StateStoreError(
                f"{self.path}: cannot read the serving state: {err}; fix or move the file "
                "(a backup of each write is not kept)"
            ) from err

    def update(self, mutate: Mutation) -> ServingState:
        with self._lock:
            state = self.read()
            mutate(state)
            self._write(state)
            return state

    def _write(self, state: ServingState) -> None:
        with atomic_write(self.path, prefix=".state-") as out:
            out.write(state.model_dump_json(indent=2))

    def close(self) -> None:
        pass


class QdrantStateStore:
    """A payload-only Qdrant collection: one point per domain, adapter and version counter.

    Qdrant has no transactions: two replicas changing the same entity at once resolve as
    last writer wins; changes to different entities never clash.
    """

    def __init__(self, client: Any, collection: str) -> None:
        from qdrant_client import models

        self._models = models
        self._client = client
        self.collection = collection
        try:
            if not client.collection_exists(collection):
                client.create_collection(collection, vectors_config={})
        except Exception as err:  # qdrant-client raises transport-specific errors
            raise StateStoreError(f"Qdrant state collection {collection!r}: {err}") from err

    @staticmethod
    def _point_id(kind: str, name: str) -> str:
        return str(uuid.uuid5(_NAMESPACE, f"{kind}:{name}"))

    def _entities(self, state: ServingState) -> dict[str, dict[str, Any]]:
        entities: dict[str, dict[str, Any]] = {}
        for name, adapter in state.adapters.items():
            entities[self._point_id("adapter", name)] = {
                "kind": "adapter",
                "name": name,
                "record": adapter.model_dump(mode="json"),
            }
        for name, domain in state.domains.items():
            entities[self._point_id("domain", name)] = {
                "kind": "domain",
                "name": name,
                "record": domain.model_dump(mode="json"),
            }
        for name, version in state.adapter_versions.items():
            entities[self._point_id("version", name)] = {
                "kind": "version",
                "name": name,
                "record": version,
            }
        return entities

    def read(self) -> ServingState:
        state = ServingState()
        offset = None
        try:
            while True:
                points, offset = self._client.scroll(
                    self.collection, limit=256, offset=offset, with_payload=True
                )
                for point in points:
                    payload = point.payload or {}
                    kind, name, record = (
                        payload.get("kind"),
                        payload.get("name"),
                        payload.get("record"),
                    )
                    if kind == "adapter":
                        state.adapters[name] = AdapterRecord.model_validate(record)
                    elif kind == "domain":
                        state.domains[name] = DomainRecord.model_validate(record)
                    elif kind == "version":
                        state.adapter_versions[name] = int(record)
                if offset is None:
                    return state
        except ValidationError as err:
            raise StateStoreError(f"Qdrant state collection {self.collection!r}: {err}") from err
        except Exception as err:
            raise StateStoreError(
                f"cannot read Qdrant state collection {self.collection!r}: {err}"
            ) from err

    def update(self, mutate: Mutation) -> ServingState:
        state = self.read()
        before = self._entities(state)
        mutate(state)
        after = self._entities(state)
        changed = [
            self._models.PointStruct(id=point_id, vector={}, payload=payload)
            for point_id, payload in after.items()
            if json.dumps(before.get(point_id), sort_keys=True)
            != json.dumps(payload, sort_keys=True)
        ]
        removed = [point_id for point_id in before if point_id not in after]
        try:
            if changed:
                self._client.upsert(self.collection, points=changed, wait=True)
            if removed:
                self._client.delete(
                    self.collection,
                    points_selector=self._models.PointIdsList(points=removed),
                    wait=True,
                )
        except Exception as err:
            raise StateStoreError(
                f"cannot write Qdrant state collection {self.collection!r}: {err}"
            ) from err
        return state

    def close(self) -> None:
        self._client.close()


def open_state_store(kind: str, data_dir: Path, qdrant: Any, collection: str) -> StateStore:
    """The store the settings name: `auto` is Qdrant when `qdrant.url` is set, else the file.

    `qdrant` is `retrieval.settings.QdrantSettings`; the store opens its own client to the
    server (an embedded index folder allows one process, so the file is used there).
    """
    use_qdrant = kind == "qdrant" or (kind == "auto" and qdrant.url)
    if not use_qdrant:
        return FileStateStore(Path(data_dir) / "state.json")
    if not qdrant.url:
        raise StateStoreError(
            "serving.state_store is 'qdrant' but retrieval.qdrant.url is not set; the shared "
            "state needs a Qdrant server (or use state_store: file)"
        )
    from qdrant_client import QdrantClient

    api_key = qdrant.api_key.get_secret_value() if qdrant.api_key else None
    client = QdrantClient(url=qdrant.url, api_key=api_key, timeout=int(qdrant.timeout_s))
    return QdrantStateStore(client, collection)
