"""The Qdrant-server backend of `retrieval.store.Store`, through qdrant-client.

Collections and aliases are the server's own: `switch_alias` is one
`update_collection_aliases` call (delete + create, atomic on the server), and the collection
metadata is Qdrant's per-collection `metadata`. `url=":memory:"` opens qdrant-client's
in-memory mode instead, which speaks the same API in process; the tests use it to stand in
for a server.

Thread safety: with a server the HTTP client is thread-safe and the server isolates requests,
so no lock is taken. qdrant-client's in-process modes have no locking at all (NumPy arrays
grown by upserts while searches read them), so there every call goes through one re-entrant
lock and writes are cut into small batches that searches interleave with.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from qdrant_client import QdrantClient, models

from retrieval.errors import QdrantUnavailableError, RetrievalError
from retrieval.settings import QdrantSettings
from retrieval.store import (
    DENSE,
    KEYWORD_FIELDS,
    SPARSE,
    Match,
    Record,
    Scored,
    Search,
    Store,
    StoredPoint,
)

T = TypeVar("T")
MEMORY = ":memory:"


def connect(settings: QdrantSettings) -> QdrantClient:
    """A client for `settings.url` (tests replace this to share one in-memory client)."""
    if settings.url == MEMORY:
        return QdrantClient(location=MEMORY)
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    return QdrantClient(
        url=settings.url,
        api_key=api_key,
        timeout=max(1, round(settings.timeout_s)),
        check_compatibility=False,
    )


class ClientStore(Store):
    """A Qdrant server (or qdrant-client's in-memory mode) behind the store interface."""

    LOCAL_WRITE_BATCH = 64
    SERVER_WRITE_BATCH = 256

    def __init__(self, settings: QdrantSettings) -> None:
        self.settings = settings
        self.prefix = settings.collection_prefix
        self.where = str(settings.url)
        self._client = connect(settings)
        from qdrant_client.local.qdrant_local import QdrantLocal

        self.local = isinstance(getattr(self._client, "_client", None), QdrantLocal)
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if self.local else contextlib.nullcontext()
        )
        if not self.local:
            try:
                self._client.get_collections()
            except Exception as err:  # connection, TLS, auth, HTTP: one message
                self._client.close()
                raise QdrantUnavailableError(
                    f"cannot reach Qdrant at {settings.url}: {type(err).__name__}: {err}. "
                    "Check that the server runs and retrieval.qdrant.url / api_key are right, "
                    "or remove retrieval.qdrant.url to use the embedded index folder"
                ) from err

    @property
    def lock(self) -> contextlib.AbstractContextManager[Any]:
        return self._lock

    def close(self) -> None:
        with self._lock:
            self._client.close()

    def call(self, fn: Callable[[QdrantClient], T]) -> T:
        """Run `fn(client)` under the lock, turning transport failures into clear errors."""
        with self._lock:
            try:
                return fn(self._client)
            except RetrievalError:
                raise
            except Exception as err:
                if not self.local and _is_transport_error(err):
                    raise QdrantUnavailableError(
                        f"Qdrant at {self.where} failed: {type(err).__name__}: {err}"
                    ) from err
                raise

    # ---- collections and aliases -----------------------------------------------------------

    def aliases(self) -> dict[str, str]:
        response = self.call(lambda c: c.get_aliases())
        result = {}
        for alias in response.aliases:
            domain = self.domain_of_alias(alias.alias_name)
            if domain is not None:
                result[domain] = alias.collection_name
        return result

    def collections(self) -> list[str]:
        return sorted(c.name for c in self.call(lambda c: c.get_collections()).collections)

    def create_collection(self, name: str, dimension: int, metadata: dict[str, Any]) -> None:
        def create(client: QdrantClient) -> None:
            client.create_collection(
                name,
                # The Embedder returns unit-length vectors, so the dot product is the cosine
                # similarity without re-normalising stored vectors.
                vectors_config={
                    DENSE: models.VectorParams(size=dimension, distance=models.Distance.DOT)
                },
                sparse_vectors_config={
                    SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)
                },
                metadata=metadata,
            )
            if not self.local:  # payload indexes only matter on a server
                for field in KEYWORD_FIELDS:
                    client.create_payload_index(
                        name, field, models.PayloadSchemaType.KEYWORD, wait=True
                    )

        self.call(create)

    def metadata(self, collection: str) -> dict[str, Any]:
        info = self.call(lambda c: c.get_collection(collection))
        return dict(info.config.metadata or {})

    def update_metadata(self, collection: str, values: dict[str, Any]) -> None:
        self.call(lambda c: c.update_collection(collection, metadata=values))

    def points_count(self, collection: str) -> int:
        return int(self.call(lambda c: c.count(collection, exact=True)).count)

    def switch_alias(self, domain: str, collection: str) -> None:
        alias = self.alias_of(domain)
        operations: list[Any] = []
        if self.resolve(domain) is not None:
            operations.append(
                models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias))
            )
        operations.append(
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=collection, alias_name=alias)
            )
        )
        self.call(lambda c: c.update_collection_aliases(change_aliases_operations=operations))

    def delete_alias(self, domain: str) -> None:
        operation = models.DeleteAliasOperation(
            delete_alias=models.DeleteAlias(alias_name=self.alias_of(domain))
        )
        self.call(lambda c: c.update_collection_aliases(change_aliases_operations=[operation]))

    def drop_collection(self, name: str) -> None:
        self.call(lambda c: c.delete_collection(name))

    # ---- points ----------------------------------------------------------------------------

    def scroll(
        self, collection: str, fields: Sequence[str] | None, where: Sequence[Match] = ()
    ) -> Iterator[Record]:
        with_payload: Any = (
            True if fields is None else models.PayloadSelectorInclude(include=list(fields))
        )
        scroll_filter = _filter(where)
        offset = None
        while True:
            records, offset = self.call(
                lambda c, offset=offset: c.scroll(
                    collection,
                    scroll_filter=scroll_filter,
                    limit=1024,
                    offset=offset,
                    with_payload=with_payload,
                    with_vectors=False,
                )
            )
            for record in records:
                yield Record(str(record.id), dict(record.payload or {}))
            if offset is None:
                return

    def upsert(self, collection: str, points: Sequence[StoredPoint]) -> None:
        size = self.LOCAL_WRITE_BATCH if self.local else self.SERVER_WRITE_BATCH
        for start in range(0, len(points), size):
            batch = [
                models.PointStruct(
                    id=point.id,
                    vector={
                        DENSE: point.dense,
                        SPARSE: models.SparseVector(
                            indices=point.sparse.indices, values=point.sparse.values
                        ),
                    },
                    payload=point.payload,
                )
                for point in points[start : start + size]
            ]
            self.call(lambda c, batch=batch: c.upsert(collection, points=batch, wait=True))

    def delete_points(self, collection: str, ids: Sequence[str]) -> None:
        size = self.LOCAL_WRITE_BATCH * 16
        for start in range(0, len(ids), size):
            selector = models.PointIdsList(points=list(ids[start : start + size]))
            self.call(
                lambda c, selector=selector: c.delete(
                    collection, points_selector=selector, wait=True
                )
            )

    def query_batch(self, collection: str, searches: Sequence[Search]) -> list[list[Scored]]:
        requests = [_request(search) for search in searches]
        responses = self.call(lambda c: c.query_batch_points(collection, requests=requests))
        return [
            [Scored(str(p.id), float(p.score), dict(p.payload or {})) for p in response.points]
            for response in responses
        ]

    def payloads(self, collection: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        records = self.call(
            lambda c: c.retrieve(collection, ids=list(ids), with_payload=True, with_vectors=False)
        )
        return {str(r.id): dict(r.payload or {}) for r in records}


def _filter(where: Sequence[Match]) -> models.Filter | None:
    if not where:
        return None
    must: list[Any] = []
    for match in where:
        condition = (
            models.MatchValue(value=match.values[0])
            if len(match.values) == 1
            else models.MatchAny(any=list(match.values))
        )
        must.append(models.FieldCondition(key=match.key, match=condition))
    return models.Filter(must=must)


def _request(search: Search) -> models.QueryRequest:
    if search.dense is not None and search.sparse is not None:
        raise ValueError("a store search takes one vector; the retriever fuses hybrid ones")
    if search.dense is not None:
        query: Any = search.dense
    else:
        query = models.SparseVector(indices=search.sparse.indices, values=search.sparse.values)  # type: ignore[union-attr]
    return models.QueryRequest(
        query=query,
        using=DENSE if search.dense is not None else SPARSE,
        filter=_filter(search.where),
        limit=search.limit,
        with_payload=search.with_payload,
    )


def _is_transport_error(err: Exception) -> bool:
    from qdrant_client.http.exceptions import ResponseHandlingException

    try:
        import httpx
    except ImportError:  # pragma: no cover - httpx comes with qdrant-client
        return isinstance(err, ResponseHandlingException)
    return isinstance(err, (ResponseHandlingException, httpx.TransportError, ConnectionError))
