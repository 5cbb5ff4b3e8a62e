"""Qdrant behind one small interface: local mode (a folder) or a server (URL + API key).

Layout: one collection per domain
---------------------------------
Each domain is its own physical collection `<prefix>.<domain>.<generation>`, reached through
the alias `<prefix>.<domain>`; searches always go through the alias. We chose separate
collections over one shared collection with a tenant index because:

* `--rebuild` builds a complete new collection aside and swaps the alias in one atomic
  operation, then drops the old one: searches never see a half-built index, and a rebuild of
  one domain never touches another. With one shared collection a rebuild would have to delete
  and rewrite a tenant's points in place.
* Each domain records its own embedding model and vector size; a collection's vector
  configuration is fixed, so a domain can move to another model without touching the others.
* The sparse vectors use Qdrant's IDF modifier, whose statistics are per collection: BM25 term
  weights then reflect the domain's own vocabulary, not a mix of every domain's.
* Local mode evaluates payload filters in Python point by point; a tenant filter on every
  search would make each search scan every domain's payloads.
* Dropping a domain is dropping a collection.
The cost is one collection per domain on a server, which is fine for the tens of domains
lorag is meant for; thousands of tiny tenants would call for the shared-collection layout.

Collection metadata (Qdrant's per-collection `metadata`) records the embedding model, vector
size, sparse scheme, chunking, state (`building`/`ready`), document count and a revision
counter; `index_version` is `<collection>@r<revision>`.

Thread safety
-------------
qdrant-client's local mode (`qdrant_client/local/`) has no locking: points live in NumPy
arrays and Python lists that upserts grow and replace while a search reads them (an upsert
appends to `payload` before it grows `deleted`, and a search combines the two into one mask,
so an interleaving fails with a shape mismatch), the alias and collection maps are plain
dicts, and one SQLite connection per collection is shared by all threads. So in local mode every call goes through one
re-entrant lock; writes are cut into small batches so that searches interleave with a long
index run. With a server the HTTP client is thread-safe and the server does the isolation, so
no lock is taken.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from qdrant_client import QdrantClient, models

from retrieval.errors import (
    IndexBusyError,
    InvalidDomainError,
    QdrantUnavailableError,
    RetrievalError,
)
from retrieval.settings import QdrantSettings

DENSE = "dense"
SPARSE = "sparse"
DOMAIN_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# Payload fields the store filters on; indexed on a server (local mode ignores indexes).
KEYWORD_FIELDS = ("doc_id", "path_prefixes", "tags", "content_hash")

T = TypeVar("T")


def validate_domain(domain: str) -> str:
    if not isinstance(domain, str) or not DOMAIN_PATTERN.match(domain):
        raise InvalidDomainError(
            f"invalid domain name {domain!r}: use 1-63 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit (e.g. 'product-docs')"
        )
    return domain


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class QdrantStore:
    """One QdrantClient plus the naming scheme of domain collections and aliases."""

    LOCAL_WRITE_BATCH = 64
    SERVER_WRITE_BATCH = 256

    def __init__(self, settings: QdrantSettings) -> None:
        self.settings = settings
        self.prefix = settings.collection_prefix
        self.local = settings.url is None
        self.where = str(settings.path) if self.local else str(settings.url)
        self._lock: contextlib.AbstractContextManager[Any]
        if self.local:
            self._client = self._open_local(Path(settings.path))
            self._lock = threading.RLock()
        else:
            self._client = self._open_server(settings)
            self._lock = contextlib.nullcontext()

    # ---- opening ---------------------------------------------------------------------------

    @staticmethod
    def _open_local(path: Path) -> QdrantClient:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RetrievalError(
                f"cannot create the index folder {path}: {err.strerror or err}; set "
                "retrieval.qdrant.path to a writable folder"
            ) from err
        try:
            return QdrantClient(path=str(path))
        except RuntimeError as err:
            if "already accessed" in str(err):
                raise IndexBusyError(
                    f"the index at {path} is open in another process (a running `lorag serve`, "
                    "or another `lorag index`?); stop it, or point retrieval.qdrant.url at a "
                    "Qdrant server so that several processes can share the index"
                ) from err
            raise

    @staticmethod
    def _open_server(settings: QdrantSettings) -> QdrantClient:
        api_key = settings.api_key.get_secret_value() if settings.api_key else None
        client = QdrantClient(
            url=settings.url,
            api_key=api_key,
            timeout=max(1, round(settings.timeout_s)),
            check_compatibility=False,
        )
        try:
            client.get_collections()
        except Exception as err:  # connection, TLS, auth, HTTP: one message
            client.close()
            raise QdrantUnavailableError(
                f"cannot reach Qdrant at {settings.url}: {type(err).__name__}: {err}. Check "
                "that the server runs and retrieval.qdrant.url / api_key are right, or remove "
                "retrieval.qdrant.url to use the local index folder"
            ) from err
        return client

    def close(self) -> None:
        with self._lock:
            self._client.close()

    @property
    def lock(self) -> contextlib.AbstractContextManager[Any]:
        """Held across calls that must see one consistent state (local mode)."""
        return self._lock

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

    # ---- naming ----------------------------------------------------------------------------

    def alias_of(self, domain: str) -> str:
        return f"{self.prefix}.{domain}"

    def new_collection_name(self, domain: str) -> str:
        stamp = datetime.now(UTC).strftime("%Y%m%dt%H%M%S")
        return f"{self.prefix}.{domain}.{stamp}-{secrets.token_hex(3)}"

    def _domain_of_alias(self, alias: str) -> str | None:
        head = f"{self.prefix}."
        if alias.startswith(head) and DOMAIN_PATTERN.match(alias[len(head) :]):
            return alias[len(head) :]
        return None

    # ---- domains and collections -----------------------------------------------------------

    def aliases(self) -> dict[str, str]:
        """Domain name -> physical collection, for every domain of this prefix."""
        response = self.call(lambda c: c.get_aliases())
        result = {}
        for alias in response.aliases:
            domain = self._domain_of_alias(alias.alias_name)
            if domain is not None:
                result[domain] = alias.collection_name
        return result

    def resolve(self, domain: str) -> str | None:
        """The physical collection behind a domain's alias, or None."""
        return self.aliases().get(domain)

    def collections_of(self, domain: str) -> list[str]:
        """Every physical collection of a domain, live or left over, oldest first."""
        head = f"{self.prefix}.{domain}."
        names = [c.name for c in self.call(lambda c: c.get_collections()).collections]
        return sorted(name for name in names if name.startswith(head))

    def create_collection(self, name: str, dimension: int, metadata: dict[str, Any]) -> None:
        def create(client: QdrantClient) -> None:
            client.create_collection(
                name,
                # The Embedder returns unit-length vectors, so the dot product is the cosine
                # similarity; local mode's COSINE would re-normalise every stored vector on
                # every query (about 20 ms at 10,000 points here).
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

    def points_count(self, collection: str) -> int:
        return int(self.call(lambda c: c.count(collection, exact=True)).count)

    def update_metadata(self, collection: str, values: dict[str, Any]) -> None:
        self.call(lambda c: c.update_collection(collection, metadata=values))

    def switch_alias(self, domain: str, collection: str) -> None:
        """Point the domain's alias at `collection` in one atomic operation."""
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
        self,
        collection: str,
        fields: Sequence[str] | None,
        scroll_filter: models.Filter | None = None,
        page: int = 1024,
    ) -> Iterator[models.Record]:
        """Every point of a collection (payload `fields` only, or all with None), no vectors."""
        with_payload: Any = (
            True if fields is None else models.PayloadSelectorInclude(include=list(fields))
        )
        offset = None
        while True:
            records, offset = self.call(
                lambda c, offset=offset: c.scroll(
                    collection,
                    scroll_filter=scroll_filter,
                    limit=page,
                    offset=offset,
                    with_payload=with_payload,
                    with_vectors=False,
                )
            )
            yield from records
            if offset is None:
                return

    def upsert(self, collection: str, points: Sequence[models.PointStruct]) -> None:
        """Write points in small batches; each batch is durable when the call returns."""
        size = self.LOCAL_WRITE_BATCH if self.local else self.SERVER_WRITE_BATCH
        for start in range(0, len(points), size):
            batch = list(points[start : start + size])
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

    def query_batch(
        self, collection: str, requests: Sequence[models.QueryRequest]
    ) -> list[list[models.ScoredPoint]]:
        responses = self.call(lambda c: c.query_batch_points(collection, requests=requests))
        return [response.points for response in responses]


def _is_transport_error(err: Exception) -> bool:
    from qdrant_client.http.exceptions import ResponseHandlingException

    try:
        import httpx
    except ImportError:  # pragma: no cover - httpx comes with qdrant-client
        return isinstance(err, ResponseHandlingException)
    return isinstance(err, (ResponseHandlingException, httpx.TransportError, ConnectionError))
