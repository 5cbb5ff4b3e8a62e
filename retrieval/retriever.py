"""`Retriever`: index folders into per-domain Qdrant collections and search them.

One Retriever owns one store (the embedded engine's folder, or a Qdrant server; see
`retrieval.store`) and one lazily loaded embedding model. It is thread-safe: searches may run from many threads while an index run
goes on in another; index runs and drops are serialised.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Self

from retrieval.embedding import Embedder, model_id_of
from retrieval.errors import DomainNotFoundError
from retrieval.fusion import FUSION_DEPTH, fuse, is_hybrid, store_searches
from retrieval.indexer import (
    IndexRun,
    ProgressCallback,
    check_compatible,
    search_settings_of,
    version_of,
)
from retrieval.results import DomainInfo, Hit, IndexReport
from retrieval.settings import QdrantSettings, RetrievalSettings, SearchMode
from retrieval.sparse import SparseEncoder
from retrieval.store import Match, Scored, Search, SparseVec, Store, validate_domain

MODES: tuple[str, ...] = ("hybrid", "dense", "sparse")
_SERVER_CACHE_S = 2.0  # how long a server-mode domain lookup is reused


def open_store(settings: QdrantSettings) -> Store:
    """The backend the settings name: a server (or in-memory client) for `url`, else the
    embedded engine at `path`."""
    if settings.url is not None:
        from retrieval.store_client import ClientStore

        return ClientStore(settings)
    from retrieval.store_edge import EdgeStore

    return EdgeStore(settings)


class Retriever:
    """Index and search domains; see the package docstring for the guarantees.

    `embedder` lets several Retrievers share one loaded model (its model must be the one the
    settings name).
    """

    def __init__(
        self, settings: RetrievalSettings | None = None, *, embedder: Embedder | None = None
    ) -> None:
        self.settings = settings or RetrievalSettings()
        embedding = self.settings.embedding
        if embedder is not None and embedder.model_id != model_id_of(embedding.model):
            raise ValueError(
                f"the embedder given is {embedder.model_id!r}, but the settings name "
                f"{embedding.model!r}"
            )
        self._embedder = embedder or Embedder(
            embedding.model,
            device=embedding.device,
            batch_size=embedding.batch_size,
            query_backend=embedding.query_backend,
            onnx_cache_dir=embedding.onnx_cache_dir,
            query_cache_size=embedding.query_cache_size,
        )
        self._encoder = SparseEncoder()
        self._store = open_store(self.settings.qdrant)
        self._write_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._metadata_cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._alias_cache: tuple[float, dict[str, str]] | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Release the store (and the index folder's lock)."""
        self._store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    # ---- indexing --------------------------------------------------------------------------

    def index(
        self,
        domain: str,
        root: Path,
        *,
        rebuild: bool = False,
        progress: ProgressCallback | None = None,
    ) -> IndexReport:
        """Bring `domain`'s index in line with the folder `root` (see `retrieval.indexer`).

        The first run and `rebuild=True` build a new collection aside and switch the domain's
        alias to it when complete; later runs update the live collection incrementally.
        `progress(stage, done, total)` is called as files are scanned ("scan"), documents
        chunked ("chunk") and chunks embedded and stored ("embed").
        """
        validate_domain(domain)
        with self._write_lock:
            try:
                run = IndexRun(
                    self._store,
                    self._embedder,
                    self._encoder,
                    self.settings,
                    domain,
                    Path(root),
                    rebuild=rebuild,
                    progress=progress,
                    on_change=self._forget,
                )
                return run.execute()
            finally:
                self._forget(None)

    def drop(self, domain: str) -> None:
        """Delete a domain: its alias and every collection of it."""
        validate_domain(domain)
        with self._write_lock:
            collections = self._store.collections_of(domain)
            if self._store.resolve(domain) is None and not collections:
                raise DomainNotFoundError(f"no index for domain {domain!r}")
            if self._store.resolve(domain) is not None:
                self._store.delete_alias(domain)
            for name in collections:
                self._store.drop_collection(name)
            self._forget(None)

    def delete(self, domain: str) -> None:
        """Same as `drop`."""
        self.drop(domain)

    # ---- domains ---------------------------------------------------------------------------

    def domains(self) -> list[DomainInfo]:
        """Every indexed domain, by name."""
        result = []
        for domain, collection in sorted(self._aliases(fresh=True).items()):
            metadata = self._metadata(collection, fresh=True)
            result.append(
                DomainInfo(
                    name=domain,
                    documents=int(metadata.get("documents", 0)),
                    chunks=self._store.points_count(collection),
                    index_version=version_of(collection, metadata),
                    embedding_model=str(metadata.get("embedding_model", "")),
                    collection=collection,
                    dimension=int(metadata.get("dimension", 0)),
                    updated_at=str(metadata.get("updated_at", "")),
                )
            )
        return result

    def info(self, domain: str) -> DomainInfo:
        """One domain's summary; DomainNotFoundError when it has no index."""
        self._require(domain, fresh=True)
        return next(info for info in self.domains() if info.name == domain)

    def has_domain(self, domain: str) -> bool:
        validate_domain(domain)
        return domain in self._aliases(fresh=True)

    def index_version(self, domain: str) -> str:
        """The version of the index that a search of `domain` would be served by now."""
        collection = self._require(domain)
        return version_of(collection, self._metadata(collection))

    # ---- search ----------------------------------------------------------------------------

    def search(
        self,
        domain: str,
        query: str,
        *,
        k: int | None = None,
        mode: SearchMode | None = None,
        source_prefix: str | None = None,
        tags: Sequence[str] | None = None,
        doc_id: str | None = None,
    ) -> list[Hit]:
        """The `k` best chunks for `query`, best first.

        `mode`: "hybrid" (dense and sparse fused, `retrieval.fusion`), "dense" or "sparse".
        Filters: `source_prefix` (a folder or file path relative to the indexed root, matched
        by whole path components), `tags` (any of them), `doc_id` (one document).
        """
        return self.search_many(
            domain, [query], k=k, mode=mode, source_prefix=source_prefix, tags=tags, doc_id=doc_id
        )[0]

    def search_many(
        self,
        domain: str,
        queries: Sequence[str],
        *,
        k: int | None = None,
        mode: SearchMode | None = None,
        source_prefix: str | None = None,
        tags: Sequence[str] | None = None,
        doc_id: str | None = None,
    ) -> list[list[Hit]]:
        """`search` for several queries at once, with one batched query embedding."""
        k = self.settings.k if k is None else k
        mode = self.settings.mode if mode is None else mode
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
        if not isinstance(k, int) or not 1 <= k <= 1000:
            raise ValueError(f"k must be an integer from 1 to 1000, got {k!r}")
        if isinstance(queries, str):
            raise TypeError("search_many takes a list of queries; use search for one")
        queries = list(queries)
        for query in queries:
            if not isinstance(query, str) or not query.strip():
                raise ValueError("a search query must be non-empty text")
        if not queries:
            return []
        collection = self._require(domain)  # fail fast, before loading the model
        check_compatible(
            domain, self._metadata(collection), search_settings_of(self._embedder, self._encoder)
        )
        dense = self._embedder.embed_queries(queries) if mode != "sparse" else None
        sparse = [self._encoder.encode_query(q) for q in queries] if mode != "dense" else None
        query_filter = _filter(source_prefix, tags, doc_id)
        requests = []
        for number in range(len(queries)):
            requests.append(
                _request(
                    mode,
                    dense[number].tolist() if dense is not None else None,
                    sparse[number] if sparse is not None else None,
                    k,
                    query_filter,
                )
            )
        return self._query(domain, requests)

    def _query(self, domain: str, requests: list[Search | None]) -> list[list[Hit]]:
        """Run prepared requests (None: nothing to search for) against the domain's alias."""
        real = [
            part for request in requests if request is not None for part in store_searches(request)
        ]
        with self._store.lock:  # in process: the alias cannot move between lookup and query
            collection = self._require(domain, fresh=self._store.local)
            metadata = self._metadata(collection)
            check_compatible(domain, metadata, search_settings_of(self._embedder, self._encoder))
            alias = self._store.alias_of(domain)
            answers = iter(self._store.query_batch(alias, real) if real else [])
            ranked: list[list[Scored]] = []
            fused: list[bool] = []
            for request in requests:
                fused.append(request is not None and is_hybrid(request))
                if request is None:
                    ranked.append([])
                elif fused[-1]:
                    lists = [next(answers), next(answers)]
                    settings = self.settings
                    ranked.append(fuse(lists, request.limit, settings.fusion, settings.rrf_k))
                else:
                    ranked.append(next(answers))
            # The fused hits came without payloads; fetch those of the survivors only. A point
            # deleted in between (by another writer of a server) is left out.
            wanted = [p.id for points, f in zip(ranked, fused, strict=True) if f for p in points]
            payloads = self._store.payloads(alias, wanted) if wanted else {}
        version = version_of(collection, metadata)
        results: list[list[Hit]] = []
        for points, was_fused in zip(ranked, fused, strict=True):
            if was_fused:
                points = [replace(p, payload=payloads[p.id]) for p in points if p.id in payloads]
            results.append([_hit(p.payload, p.score, version) for p in points])
        return results

    def document_chunks(self, domain: str, doc_id: str) -> list[Hit]:
        """All chunks of one document in order (score 1.0); empty if it is not indexed."""
        self._require(domain)
        records = list(
            self._store.scroll(
                self._store.alias_of(domain),
                None,
                _filter(None, None, doc_id),
            )
        )
        by_version: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            payload = record.payload or {}
            by_version.setdefault(payload.get("content_hash", ""), []).append(payload)
        if not by_version:
            return []

        # Mid-update a document may have two versions; prefer the newest complete one.
        def rank(chunks: list[dict[str, Any]]) -> tuple[bool, str]:
            complete = len(chunks) == chunks[0].get("chunk_count")
            return complete, max(str(c.get("indexed_at", "")) for c in chunks)

        chosen = max(by_version.values(), key=rank)
        chosen.sort(key=lambda payload: int(payload.get("chunk_index", 0)))
        version = self.index_version(domain)
        return [_hit(payload, 1.0, version) for payload in chosen]

    # ---- lookups and caches ----------------------------------------------------------------

    def _forget(self, collection: str | None) -> None:
        with self._cache_lock:
            if collection is None:
                self._metadata_cache.clear()
            else:
                self._metadata_cache.pop(collection, None)
            self._alias_cache = None

    def _fresh_enough(self, stamp: float) -> bool:
        # In process: only this Retriever can write (the folder is locked), so entries stay
        # valid until it forgets them. A server may be written by others: reuse briefly.
        return self._store.local or time.monotonic() - stamp < _SERVER_CACHE_S

    def _aliases(self, fresh: bool = False) -> dict[str, str]:
        with self._cache_lock:
            cached = self._alias_cache
        if cached is not None and not fresh and self._fresh_enough(cached[0]):
            return cached[1]
        aliases = self._store.aliases()
        with self._cache_lock:
            self._alias_cache = (time.monotonic(), aliases)
        return aliases

    def _metadata(self, collection: str, fresh: bool = False) -> dict[str, Any]:
        with self._cache_lock:
            cached = self._metadata_cache.get(collection)
        if cached is not None and not fresh and self._fresh_enough(cached[0]):
            return cached[1]
        metadata = self._store.metadata(collection)
        with self._cache_lock:
            self._metadata_cache[collection] = (time.monotonic(), metadata)
        return metadata

    def _require(self, domain: str, fresh: bool = False) -> str:
        """The collection behind a domain, or DomainNotFoundError listing the known ones."""
        validate_domain(domain)
        aliases = self._aliases(fresh=fresh)
        if domain not in aliases:
            aliases = self._aliases(fresh=True)
        if domain not in aliases:
            known = ", ".join(sorted(aliases)) or "none yet"
            raise DomainNotFoundError(
                f"no index for domain {domain!r} (indexed domains: {known}); create it with "
                f"`lorag index {domain} PATH`"
            )
        return aliases[domain]


def _filter(
    source_prefix: str | None, tags: Sequence[str] | None, doc_id: str | None
) -> tuple[Match, ...]:
    where: list[Match] = []
    if source_prefix:
        prefix = source_prefix.strip().removeprefix("./").strip("/")
        if prefix:
            where.append(Match("path_prefixes", (prefix,)))
    if tags:
        values = [tags] if isinstance(tags, str) else list(tags)
        where.append(Match("tags", tuple(values)))
    if doc_id:
        where.append(Match("doc_id", (doc_id,)))
    return tuple(where)


def _request(
    mode: str,
    dense: list[float] | None,
    sparse: SparseVec | None,
    k: int,
    where: tuple[Match, ...],
) -> Search | None:
    has_terms = sparse is not None and bool(sparse.indices)
    if mode == "sparse" and not has_terms:
        return None  # no word of the query can match anything
    if mode == "dense" or (mode == "hybrid" and not has_terms):
        return Search(limit=k, dense=dense, where=where)
    if mode == "sparse":
        return Search(limit=k, sparse=sparse, where=where)
    return Search(limit=k, dense=dense, sparse=sparse, where=where, depth=max(4 * k, FUSION_DEPTH))


def _hit(payload: dict[str, Any], score: float, version: str) -> Hit:
    return Hit(
        doc_id=str(payload.get("doc_id", "")),
        source=str(payload.get("source", "")),
        heading=str(payload.get("heading", "")),
        chunk_index=int(payload.get("chunk_index", 0)),
        text=str(payload.get("text", "")),
        score=float(score),
        index_version=version,
    )
