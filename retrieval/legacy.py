"""Index folders written by lorag before the embedded engine: migrated, nothing lost.

qdrant-client's local mode kept `meta.json` (collections, aliases) and
`collection/<name>/storage.sqlite` in `retrieval.qdrant.path`. The embedded engine cannot
read that, and ignoring it would look like an empty index. So the first open of such a folder
moves those files into `<path>/local-mode-backup/`, copies every collection (points with both
vectors, payloads, metadata) and alias into the embedded engine, and only then writes the
store's marker file. A migration that dies half way is redone from the backup on the next
open; the backup is never deleted (remove it once the migrated index serves well).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from retrieval.errors import IndexBusyError, RetrievalError
from retrieval.store import DENSE, SPARSE, SparseVec, StoredPoint

if TYPE_CHECKING:
    from retrieval.store_edge import EdgeStore

BACKUP = "local-mode-backup"
_FILES = ("meta.json", "collection")
log = logging.getLogger(__name__)


class LegacyIndexError(RetrievalError):
    """A local-mode index folder that could not be migrated."""


def is_local_mode(root: Path) -> bool:
    """Whether `root` holds a qdrant-client local-mode index."""
    return (root / "meta.json").is_file() and (root / "collection").is_dir()


def set_aside(root: Path) -> None:
    """Move the local-mode files of `root` into the backup folder (refusing while an older
    lorag still has them open)."""
    lock_path = root / ".lock"
    if lock_path.exists():
        with open(lock_path, "r+") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as err:
                raise IndexBusyError(
                    f"the index at {root} is open in an older lorag (qdrant-client local "
                    "mode); stop it, then open the index again to migrate it"
                ) from err
    backup = root / BACKUP
    backup.mkdir(exist_ok=True)
    for name in (*_FILES, ".lock"):
        if (root / name).exists():
            os.replace(root / name, backup / name)


def pending(root: Path) -> bool:
    """A set-aside local-mode index whose migration has not completed."""
    return is_local_mode(root / BACKUP)


def migrate(store: EdgeStore) -> list[str]:
    """Copy the backup's collections and aliases into `store`; the domains migrated."""
    from qdrant_client import QdrantClient

    backup = store.root / BACKUP
    for name in store.collections():  # a migration that died half way starts over
        store.drop_collection(name)
    try:
        client = QdrantClient(path=str(backup))
    except Exception as err:
        raise LegacyIndexError(
            f"cannot read the old index in {backup} to migrate it: {err}; move that folder "
            "away and index the documents again with `lorag index DOMAIN PATH`"
        ) from err
    try:
        for description in client.get_collections().collections:
            _copy(client, description.name, store)
        aliases = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}
    finally:
        client.close()
    domains = []
    for alias, collection in sorted(aliases.items()):
        domain = store.domain_of_alias(alias)
        if domain is not None and collection in store.collections():
            store.switch_alias(domain, collection)
            domains.append(domain)
    log.warning(
        "migrated the index at %s from qdrant-client local mode to the embedded engine "
        "(domains: %s); the old files are in %s",
        store.root,
        ", ".join(domains) or "none",
        backup,
    )
    return domains


def _copy(client: object, name: str, store: EdgeStore) -> None:
    info = client.get_collection(name)  # type: ignore[attr-defined]
    vectors = info.config.params.vectors
    dimension = vectors[DENSE].size if isinstance(vectors, dict) else vectors.size
    metadata = json.loads(json.dumps(dict(info.config.metadata or {})))
    store.create_collection(name, int(dimension), metadata)
    offset = None
    while True:
        records, offset = client.scroll(  # type: ignore[attr-defined]
            name, limit=512, offset=offset, with_payload=True, with_vectors=True
        )
        points = []
        for record in records:
            vector = record.vector or {}
            sparse = vector.get(SPARSE)
            points.append(
                StoredPoint(
                    id=str(record.id),
                    dense=list(vector[DENSE]),
                    sparse=SparseVec(list(sparse.indices), list(sparse.values))
                    if sparse is not None
                    else SparseVec([], []),
                    payload=dict(record.payload or {}),
                )
            )
        store.upsert(name, points)
        if offset is None:
            break
    store.optimize(name)
