"""The embedded backend of `retrieval.store.Store`: Qdrant's own engine in process.

`qdrant-edge-py` gives one Qdrant shard per folder (segments, HNSW, sparse index with IDF,
payload indexes, write-ahead log) but no collections, aliases or collection metadata. This
module adds the smallest equivalent of each, as files next to the shards:

    <path>/lorag-store.json           marker: which engine and layout wrote this folder
    <path>/lorag-aliases.json         alias -> collection, the server's alias table
    <path>/lorag.lock                 held (flock) by the one process that has the store open
    <path>/collections/<name>/shard/  one EdgeShard: the server's collection
    <path>/collections/<name>/metadata.json   the server's collection `metadata`

How it maps to the server, and why it is as safe:
* A collection appears atomically: its shard and metadata are written under
  `<name>.creating` and renamed to `<name>` when complete; dropping renames to
  `<name>.dropping` before deleting. Leftovers of either kind are removed on open.
* An alias switch is one atomic replace of `lorag-aliases.json` (write, fsync, rename), after
  the target shard was flushed: a crash leaves either the old or the new pointer, never a
  pointer to a half-written shard. The server's `update_collection_aliases` gives the same.
* Metadata updates are atomic replaces of `metadata.json`, merged like the server's.
* Points survive a killed process once `upsert` returns: the shard's write-ahead log has
  them, and reopening replays it. The shard is flushed (fsync) before every metadata change
  and alias switch, so those never claim more than a power loss would leave.
* Only one process may open the folder (the engine's WAL is exclusive too); a second one
  gets `IndexBusyError`. Within the process every call goes through one re-entrant lock,
  so a search never sees the alias move between lookup and query.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import qdrant_edge as qe

from retrieval import legacy
from retrieval.errors import IndexBusyError, RetrievalError
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
    utc_now,
)

MARKER = "lorag-store.json"
ALIASES = "lorag-aliases.json"
LOCK = "lorag.lock"
COLLECTIONS = "collections"
LAYOUT = 1
_CREATING, _DROPPING = ".creating", ".dropping"


def write_json(path: Path, data: Any) -> None:
    """Replace `path` atomically and durably: a crash leaves the old or the new content."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock_folder(root: Path) -> IO[str]:
    handle = open(root / LOCK, "a+", encoding="utf-8")  # noqa: SIM115 - held until close
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as err:
        handle.close()
        raise IndexBusyError(
            f"the index at {root} is open in another process (a running `lorag serve`, or "
            "another `lorag index`?); stop it, or point retrieval.qdrant.url at a Qdrant "
            "server so that several processes can share the index"
        ) from err
    return handle


class EdgeStore(Store):
    """Collections as shard folders, aliases as one atomically replaced file."""

    WRITE_BATCH = 256

    def __init__(self, settings: QdrantSettings) -> None:
        self.settings = settings
        self.prefix = settings.collection_prefix
        self.root = Path(settings.path)
        self.where = str(self.root)
        self.local = True
        try:
            (self.root / COLLECTIONS).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RetrievalError(
                f"cannot create the index folder {self.root}: {err.strerror or err}; set "
                "retrieval.qdrant.path to a writable folder"
            ) from err
        self._lock_handle = _lock_folder(self.root)
        self._lock = threading.RLock()
        self._shards: dict[str, qe.EdgeShard] = {}
        self._metadata: dict[str, dict[str, Any]] = {}
        try:
            self._clean_leftovers()
            aliases_file = self.root / ALIASES
            self._aliases: dict[str, str] = (
                json.loads(aliases_file.read_text()) if aliases_file.exists() else {}
            )
            marker = self.root / MARKER
            if legacy.is_local_mode(self.root):  # written by lorag before the edge engine
                legacy.set_aside(self.root)
            if not marker.exists() and legacy.pending(self.root):
                legacy.migrate(self)
            if not marker.exists():  # written last: the folder is complete in this layout
                write_json(marker, {"engine": "qdrant-edge", "layout": LAYOUT, "at": utc_now()})
        except BaseException:
            self.close()
            raise

    @property
    def lock(self) -> contextlib.AbstractContextManager[Any]:
        return self._lock

    def close(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                shard.flush()
                shard.close()
            self._shards.clear()
            self._lock_handle.close()  # releases the flock

    # ---- files -----------------------------------------------------------------------------

    def _folder(self, name: str) -> Path:
        return self.root / COLLECTIONS / name

    def _clean_leftovers(self) -> None:
        """Remove collections that were half created or half dropped when a run died."""
        for entry in (self.root / COLLECTIONS).iterdir():
            if entry.name.endswith((_CREATING, _DROPPING)):
                shutil.rmtree(entry, ignore_errors=True)

    def _shard(self, name: str) -> qe.EdgeShard:
        """The open shard of a collection or alias name (opened on first use)."""
        name = self._aliases.get(name, name)
        shard = self._shards.get(name)
        if shard is None:
            folder = self._folder(name)
            if not (folder / "metadata.json").is_file():
                raise RetrievalError(f"collection {name!r} does not exist in {self.root}")
            try:
                shard = qe.EdgeShard.load(str(folder / "shard"))
            except Exception as err:
                if "WouldBlock" in str(err):
                    raise IndexBusyError(f"{folder} is open elsewhere: {err}") from err
                raise
            self._shards[name] = shard
        return shard

    # ---- collections and aliases -----------------------------------------------------------

    def aliases(self) -> dict[str, str]:
        with self._lock:
            result = {}
            for alias, collection in self._aliases.items():
                domain = self.domain_of_alias(alias)
                if domain is not None:
                    result[domain] = collection
            return result

    def collections(self) -> list[str]:
        with self._lock:
            return sorted(
                entry.name
                for entry in (self.root / COLLECTIONS).iterdir()
                if entry.is_dir() and not entry.name.endswith((_CREATING, _DROPPING))
            )

    def create_collection(self, name: str, dimension: int, metadata: dict[str, Any]) -> None:
        with self._lock:
            final = self._folder(name)
            if final.exists():
                raise RetrievalError(f"collection {name!r} exists already in {self.root}")
            building = final.with_name(name + _CREATING)
            shutil.rmtree(building, ignore_errors=True)
            building.mkdir(parents=True)
            shard = qe.EdgeShard.create(str(building / "shard"), _config(dimension))
            try:
                for field in KEYWORD_FIELDS:
                    # Filters use these indexes; no per-value HNSW links (they would multiply
                    # the optimiser's work for fields with thousands of values).
                    shard.update(
                        qe.UpdateOperation.create_field_index(
                            field, qe.KeywordIndexParams(enable_hnsw=False)
                        )
                    )
                shard.flush()
            finally:
                shard.close()
            write_json(building / "metadata.json", metadata)
            os.replace(building, final)
            fsync_dir(final.parent)

    def metadata(self, collection: str) -> dict[str, Any]:
        with self._lock:
            cached = self._metadata.get(collection)
            if cached is None:
                path = self._folder(collection) / "metadata.json"
                if not path.is_file():
                    raise RetrievalError(f"collection {collection!r} does not exist")
                cached = json.loads(path.read_text())
                self._metadata[collection] = cached
            return dict(cached)

    def update_metadata(self, collection: str, values: dict[str, Any]) -> None:
        with self._lock:
            # State changes (`updating`, `ready`) follow writes: put those on disk first, so
            # that metadata never claims more than a power loss would leave.
            self._shard(collection).flush()
            merged = {**self.metadata(collection), **values}
            write_json(self._folder(collection) / "metadata.json", merged)
            self._metadata[collection] = merged

    def points_count(self, collection: str) -> int:
        with self._lock:
            return int(self._shard(collection).count(qe.CountRequest(exact=True)))

    def switch_alias(self, domain: str, collection: str) -> None:
        with self._lock:
            self._shard(collection).flush()  # what the pointer points at is on disk first
            self._write_aliases({**self._aliases, self.alias_of(domain): collection})

    def delete_alias(self, domain: str) -> None:
        with self._lock:
            aliases = dict(self._aliases)
            aliases.pop(self.alias_of(domain), None)
            self._write_aliases(aliases)

    def _write_aliases(self, aliases: dict[str, str]) -> None:
        write_json(self.root / ALIASES, aliases)
        self._aliases = aliases

    def drop_collection(self, name: str) -> None:
        with self._lock:
            pointing = [alias for alias, target in self._aliases.items() if target == name]
            if pointing:  # like the server: dropping a collection drops its aliases
                self._write_aliases({a: t for a, t in self._aliases.items() if a not in pointing})
            shard = self._shards.pop(name, None)
            if shard is not None:
                shard.close()
            self._metadata.pop(name, None)
            folder = self._folder(name)
            if folder.exists():
                doomed = folder.with_name(name + _DROPPING)
                os.replace(folder, doomed)
                shutil.rmtree(doomed, ignore_errors=True)

    # ---- points ----------------------------------------------------------------------------

    def scroll(
        self, collection: str, fields: Sequence[str] | None, where: Sequence[Match] = ()
    ) -> Iterator[Record]:
        with_payload: Any = True if fields is None else qe.PayloadSelector.Include(list(fields))
        scroll_filter = _filter(where)
        offset: Any = None
        while True:
            request = qe.ScrollRequest(
                offset=offset,
                limit=1024,
                filter=scroll_filter,
                with_payload=with_payload,
                with_vector=False,
            )
            with self._lock:
                records, offset = self._shard(collection).scroll(request)
            for record in records:
                yield Record(str(record.id), dict(record.payload or {}))
            if offset is None:
                return

    def upsert(self, collection: str, points: Sequence[StoredPoint]) -> None:
        for start in range(0, len(points), self.WRITE_BATCH):
            batch = [
                qe.Point(
                    point.id,
                    {
                        DENSE: point.dense,
                        SPARSE: qe.SparseVector(point.sparse.indices, point.sparse.values),
                    },
                    point.payload,
                )
                for point in points[start : start + self.WRITE_BATCH]
            ]
            with self._lock:
                self._shard(collection).update(qe.UpdateOperation.upsert_points(batch))

    def delete_points(self, collection: str, ids: Sequence[str]) -> None:
        for start in range(0, len(ids), 4096):
            operation = qe.UpdateOperation.delete_points(list(ids[start : start + 4096]))
            with self._lock:
                self._shard(collection).update(operation)

    def query_batch(self, collection: str, searches: Sequence[Search]) -> list[list[Scored]]:
        batch = qe.QueryBatchRequest([_request(search) for search in searches])
        with self._lock:
            responses = self._shard(collection).query_batch(batch)
        return [
            [Scored(str(p.id), float(p.score), dict(p.payload or {})) for p in points]
            for points in responses
        ]

    def payloads(self, collection: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        with self._lock:
            records = self._shard(collection).retrieve(list(ids), True, False)
        return {str(r.id): dict(r.payload or {}) for r in records}

    def optimize(self, collection: str) -> None:
        """Merge segments and build HNSW once a run's writes are in (the engine has no
        background optimiser), for collections of at least `hnsw_min_points`: below that an
        exact scan takes a few ms, while the build holds the GIL for seconds to minutes,
        pausing every thread of the process. Index runs are serialised, so the shard stays
        open meanwhile."""
        with self._lock:
            shard = self._shard(collection)
            if shard.count(qe.CountRequest(exact=True)) < self.settings.hnsw_min_points:
                return
        shard.optimize()
        with self._lock:
            shard.flush()


def _config(dimension: int) -> qe.EdgeConfig:
    # Unit-length vectors: the dot product is the cosine similarity.
    return qe.EdgeConfig(
        vectors={DENSE: qe.EdgeVectorParams(size=dimension, distance=qe.Distance.Dot)},
        sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
    )


def _filter(where: Sequence[Match]) -> qe.Filter | None:
    if not where:
        return None
    must: list[Any] = []
    for match in where:
        condition: Any = (
            qe.MatchValue(match.values[0])
            if len(match.values) == 1
            else qe.MatchAny(list(match.values))
        )
        must.append(qe.FieldCondition(key=match.key, match=condition))
    return qe.Filter(must=must)


def _request(search: Search) -> qe.QueryRequest:
    if search.dense is not None and search.sparse is not None:
        raise ValueError("a store search takes one vector; the retriever fuses hybrid ones")
    vector: Any = (
        search.dense
        if search.dense is not None
        else qe.SparseVector(search.sparse.indices, search.sparse.values)  # type: ignore[union-attr]
    )
    return qe.QueryRequest(
        limit=search.limit,
        query=qe.Query.Nearest(vector, using=DENSE if search.dense is not None else SPARSE),
        filter=_filter(search.where),
        with_payload=search.with_payload,
    )
