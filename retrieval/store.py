"""The store interface: per-domain collections behind aliases, two backends underneath.

Backends
--------
* `retrieval.store_edge.EdgeStore` (the default, `retrieval.qdrant.path`): Qdrant's embedded
  engine (`qdrant-edge-py`), in process: HNSW, sparse vectors with IDF, the Query API's
  prefetch + fusion, payload indexes and a write-ahead log, one shard folder per collection.
* `retrieval.store_client.ClientStore` (`retrieval.qdrant.url`): a Qdrant server through
  qdrant-client (`url=":memory:"` is qdrant-client's in-memory mode, which the tests use as
  a stand-in for the server API).

Everything above this module (indexer, retriever) sees only `Store` and the plain data types
below, so both backends behave identically; the tests run against both.

Layout: one collection per domain
---------------------------------
Each domain is its own physical collection `<prefix>.<domain>.<generation>`, reached through
the alias `<prefix>.<domain>`; searches always go through the alias. We chose separate
collections over one shared collection with a tenant index because:

* `--rebuild` builds a complete new collection aside and swaps the alias in one atomic
  operation, then drops the old one: searches never see a half-built index, and a rebuild of
  one domain never touches another.
* Each domain records its own embedding model and vector size; a collection's vector
  configuration is fixed, so a domain can move to another model without touching the others.
* The sparse vectors use Qdrant's IDF modifier, whose statistics are per collection (per
  shard): BM25 term weights then reflect the domain's own vocabulary, not a mix of domains'.
* Dropping a domain is dropping a collection.

Collection metadata records the embedding model, vector size, sparse scheme, chunking, state
(`building`/`updating`/`ready`), document count and a revision counter; `index_version` is
`<collection>@r<revision>`.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from retrieval.errors import InvalidDomainError
from retrieval.settings import QdrantSettings

DENSE = "dense"
SPARSE = "sparse"
DOMAIN_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# Payload fields the store filters on; both backends index them.
KEYWORD_FIELDS = ("doc_id", "path_prefixes", "tags", "content_hash")


def validate_domain(domain: str) -> str:
    if not isinstance(domain, str) or not DOMAIN_PATTERN.match(domain):
        raise InvalidDomainError(
            f"invalid domain name {domain!r}: use 1-63 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit (e.g. 'product-docs')"
        )
    return domain


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---- plain data that crosses the interface ---------------------------------------------------


@dataclass(frozen=True)
class SparseVec:
    """A sparse vector: sorted term indices and their weights."""

    indices: list[int]
    values: list[float]


@dataclass(frozen=True)
class StoredPoint:
    """One chunk as written: id, unit-length dense vector, BM25 sparse vector, payload."""

    id: str
    dense: list[float]
    sparse: SparseVec
    payload: dict[str, Any]


@dataclass(frozen=True)
class Record:
    """A point as read back (no vectors)."""

    id: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Scored:
    """A search result."""

    id: str
    score: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class Match:
    """Payload condition: the field (a keyword or list of keywords) holds any of `values`."""

    key: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Search:
    """One search: dense alone, sparse alone, or (in the retriever) both, fused by
    `retrieval.fusion` over `depth` hits of each; a store runs one vector at a time. Every
    `Match` in `where` must hold. Without `with_payload` hits carry ids and scores only (a
    hybrid search's halves: the payloads of the fused top `limit` are fetched afterwards)."""

    limit: int
    dense: list[float] | None = None
    sparse: SparseVec | None = None
    where: tuple[Match, ...] = field(default_factory=tuple)
    depth: int = 20
    with_payload: bool = True


# ---- the interface ---------------------------------------------------------------------------


class Store(ABC):
    """Domain collections, aliases, metadata and points; see the module docstring."""

    settings: QdrantSettings
    prefix: str
    where: str
    # True when this process is the only writer (embedded engine, in-memory client): cached
    # aliases and metadata stay valid until this process changes them.
    local: bool

    @property
    @abstractmethod
    def lock(self) -> contextlib.AbstractContextManager[Any]:
        """Held across calls that must see one consistent state (alias lookup + query)."""

    @abstractmethod
    def close(self) -> None: ...

    # naming (shared)
    def alias_of(self, domain: str) -> str:
        return f"{self.prefix}.{domain}"

    def new_collection_name(self, domain: str) -> str:
        stamp = datetime.now(UTC).strftime("%Y%m%dt%H%M%S")
        return f"{self.prefix}.{domain}.{stamp}-{secrets.token_hex(3)}"

    def domain_of_alias(self, alias: str) -> str | None:
        head = f"{self.prefix}."
        if alias.startswith(head) and DOMAIN_PATTERN.match(alias[len(head) :]):
            return alias[len(head) :]
        return None

    def resolve(self, domain: str) -> str | None:
        """The physical collection behind a domain's alias, or None."""
        return self.aliases().get(domain)

    def collections_of(self, domain: str) -> list[str]:
        """Every physical collection of a domain, live or left over, oldest first."""
        head = f"{self.prefix}.{domain}."
        return sorted(name for name in self.collections() if name.startswith(head))

    # collections and aliases
    @abstractmethod
    def aliases(self) -> dict[str, str]:
        """Domain name -> physical collection, for every domain of this prefix."""

    @abstractmethod
    def collections(self) -> list[str]:
        """Every physical collection in the store."""

    @abstractmethod
    def create_collection(self, name: str, dimension: int, metadata: dict[str, Any]) -> None: ...

    @abstractmethod
    def metadata(self, collection: str) -> dict[str, Any]: ...

    @abstractmethod
    def update_metadata(self, collection: str, values: dict[str, Any]) -> None:
        """Merge `values` into the collection's metadata."""

    @abstractmethod
    def points_count(self, collection: str) -> int: ...

    @abstractmethod
    def switch_alias(self, domain: str, collection: str) -> None:
        """Point the domain's alias at `collection` in one atomic step."""

    @abstractmethod
    def delete_alias(self, domain: str) -> None: ...

    @abstractmethod
    def drop_collection(self, name: str) -> None: ...

    # points (a collection or an alias name)
    @abstractmethod
    def scroll(
        self, collection: str, fields: Sequence[str] | None, where: Sequence[Match] = ()
    ) -> Iterator[Record]:
        """Every point (payload `fields` only, or all with None) matching `where`."""

    @abstractmethod
    def upsert(self, collection: str, points: Sequence[StoredPoint]) -> None:
        """Write points; they are durable when the call returns."""

    @abstractmethod
    def delete_points(self, collection: str, ids: Sequence[str]) -> None: ...

    @abstractmethod
    def query_batch(self, collection: str, searches: Sequence[Search]) -> list[list[Scored]]: ...

    @abstractmethod
    def payloads(self, collection: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The payloads of the points among `ids` that exist, by id."""

    def optimize(self, collection: str) -> None:
        """Build search indexes after a batch of writes (a server does this by itself)."""
