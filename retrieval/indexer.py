"""One index run: bring a domain's collection in line with a folder, losing nothing on the way.

Incremental semantics (the same code builds a new collection, which starts empty):
* a document is its path relative to the root plus the sha256 of its bytes; each chunk's
  point id is derived from (doc id, content hash, chunk index), so rewriting a chunk
  overwrites the same point and a rerun never duplicates anything;
* a document is unchanged when the index holds its complete chunk set for the current hash:
  it is neither parsed nor embedded;
* a new or changed document's chunks are upserted first and the chunks of its previous
  version deleted only after all new ones are stored, so a search finds either version and
  an interrupted run loses nothing; documents whose file is gone are deleted last;
* a rerun after an interruption sees which documents are complete and finishes the rest
  (a document whose new chunks are complete but whose old ones remain only gets the delete).

A file that cannot be read or parsed this time keeps its indexed chunks (the failure may be
transient); a file that is now empty, binary, too large or of an unsupported type is treated
like a removed one. Embedding runs on the calling thread while a writer thread stores the
previous batch, so the store's write time hides behind the model's compute.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrieval.chunking import Chunk, Chunker
from retrieval.embedding import Embedder
from retrieval.errors import IncompatibleIndexError
from retrieval.loaders import (
    Document,
    LoaderError,
    ScanSkip,
    SourceFile,
    parse_document,
    scan_folder,
)
from retrieval.results import IndexReport, SkippedFile
from retrieval.settings import RetrievalSettings
from retrieval.sparse import SparseEncoder
from retrieval.store import Store, StoredPoint, utc_now

ProgressCallback = Callable[[str, int, int], None]
"""`progress(stage, done, total)`; stages: "scan" (files), "chunk" (documents), "embed" (chunks)."""

METADATA_SCHEMA = 1
_POINT_NAMESPACE = uuid.UUID("6f1c1d2e-9a57-4c52-8f0e-6c0ad3f1e0b7")
_STATE_FIELDS = ("doc_id", "content_hash", "chunk_index", "chunk_count")


def point_id(doc_id: str, content_hash: str, chunk_index: int) -> str:
    """The deterministic id of one chunk of one version of a document."""
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{doc_id}\n{content_hash}\n{chunk_index}"))


def path_prefixes(doc_id: str) -> list[str]:
    """`a/b/c.md` -> [`a`, `a/b`, `a/b/c.md`]: what a `source_prefix` filter matches."""
    parts = doc_id.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def search_settings_of(embedder: Embedder, encoder: SparseEncoder) -> dict[str, Any]:
    """What an index must have been built with for searches with this model to work."""
    return {"embedding_model": embedder.model_id, "sparse_scheme": encoder.scheme}


def index_settings_of(
    embedder: Embedder, encoder: SparseEncoder, settings: RetrievalSettings
) -> dict[str, Any]:
    """What an index must have been built with for an incremental update to be consistent."""
    return {
        **search_settings_of(embedder, encoder),
        "max_tokens": settings.chunking.max_tokens,
        "overlap_tokens": settings.chunking.overlap_tokens,
    }


def check_compatible(domain: str, metadata: dict[str, Any], wanted: dict[str, Any]) -> None:
    """Raise IncompatibleIndexError naming each setting that differs from the index's."""
    differ = [key for key, value in wanted.items() if metadata.get(key) != value]
    if differ:
        was = ", ".join(f"{key}={metadata.get(key)!r}" for key in differ)
        now = ", ".join(f"{key}={wanted[key]!r}" for key in differ)
        raise IncompatibleIndexError(
            f"domain {domain!r} was indexed with {was}, but the configuration now has {now}; "
            f"re-index it with `lorag index {domain} PATH --rebuild` (or restore the old "
            "settings)"
        )


def version_of(collection: str, metadata: dict[str, Any]) -> str:
    return f"{collection}@r{int(metadata.get('revision', 0))}"


@dataclass
class _Indexed:
    """What the collection holds for one document: (point id, hash, index, count) per point."""

    points: list[tuple[str, str, int, int]] = field(default_factory=list)

    def ids(self) -> set[str]:
        return {p[0] for p in self.points}

    def complete(self, content_hash: str) -> set[str] | None:
        """The point ids of the complete chunk set for `content_hash`, or None."""
        matching = [p for p in self.points if p[1] == content_hash]
        if not matching:
            return None
        count = matching[0][3]
        if len(matching) == count and sorted(p[2] for p in matching) == list(range(count)):
            return {p[0] for p in matching}
        return None


@dataclass
class _Work:
    document: Document
    chunks: list[Chunk]
    old_ids: set[str]
    is_new: bool


class IndexRun:
    """Index `root` into `domain`; see the module docstring for the guarantees."""

    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        encoder: SparseEncoder,
        settings: RetrievalSettings,
        domain: str,
        root: Path,
        *,
        rebuild: bool = False,
        progress: ProgressCallback | None = None,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.encoder = encoder
        self.settings = settings
        self.domain = domain
        self.root = Path(root)
        self.rebuild = rebuild
        self.progress = progress or (lambda stage, done, total: None)
        self.on_change = on_change or (lambda collection: None)
        self.report = IndexReport(domain=domain, rebuilt=False)

    # ---- entry point -----------------------------------------------------------------------

    def execute(self) -> IndexReport:
        started = time.monotonic()
        if not self.root.exists():
            raise FileNotFoundError(f"{self.root}: no such folder to index")
        if not self.root.is_dir():
            raise NotADirectoryError(f"{self.root}: not a folder; give the folder of documents")
        wanted = index_settings_of(self.embedder, self.encoder, self.settings)
        live = self.store.resolve(self.domain)
        building = live is None or self.rebuild
        if live is not None and not self.rebuild:
            check_compatible(self.domain, self.store.metadata(live), wanted)
        # Read the folder before creating anything, so a bad folder changes nothing.
        found, scan_skips = scan_folder(
            self.root.resolve(), int(self.settings.max_file_mb * 1024 * 1024)
        )
        self.progress("scan", len(found), len(found))
        target = self._build_target(live, wanted) if building else live
        assert target is not None
        self.report.collection = target
        indexed = self._indexed_documents(target)
        if self._apply(target, indexed, found, scan_skips) or building:
            # Before the switch or the `ready` mark: searches then get the built indexes.
            self.store.optimize(target)
        metadata = self.store.metadata(target)
        if building:
            # Everything in a new collection is new to searches, resumed documents included.
            report = self.report
            report.added = sorted(report.added + report.updated + report.unchanged)
            report.updated, report.unchanged = [], []
            self._finish(target, {"state": "ready", "revision": metadata.get("revision", 0) + 1})
            # In process, holding the store's lock makes switch-and-drop one step for searches
            # (on a server the alias switch itself is atomic and queries go through the alias).
            with self.store.lock:
                self.store.switch_alias(self.domain, target)
                for name in self.store.collections_of(self.domain):
                    if name != target:
                        self.store.drop_collection(name)
                self.on_change(target)
            self.report.rebuilt = live is not None
        else:
            if self.report.changed or metadata.get("state") != "ready":  # or a run died
                self._finish(
                    target, {"state": "ready", "revision": metadata.get("revision", 0) + 1}
                )
            self._drop_old_generations(target)
        self.report.index_version = version_of(target, self.store.metadata(target))
        self.report.chunks_total = self.store.points_count(target)
        self.report.seconds = time.monotonic() - started
        return self.report

    # ---- steps -----------------------------------------------------------------------------

    def _drop_old_generations(self, live: str) -> None:
        """Drop finished collections a rebuild left behind when it died between switching
        the alias and dropping them; unfinished builds stay for `--rebuild` to resume."""
        for name in self.store.collections_of(self.domain):
            if name != live and self.store.metadata(name).get("state") != "building":
                self.store.drop_collection(name)

    def _build_target(self, live: str | None, wanted: dict[str, Any]) -> str:
        """A collection to build into: a compatible unfinished one left by an interrupted
        build (resumed), else a new one. Other leftovers are dropped."""
        dimension = self.embedder.dimension  # loads the model: fail before changing anything
        leftovers = [name for name in self.store.collections_of(self.domain) if name != live]
        resumable = None
        for name in reversed(leftovers):
            metadata = self.store.metadata(name)
            if metadata.get("state") == "building" and all(
                metadata.get(key) == value for key, value in wanted.items()
            ):
                resumable = name
                break
        for name in leftovers:
            if name != resumable:
                self.store.drop_collection(name)
        if resumable is not None:
            return resumable
        name = self.store.new_collection_name(self.domain)
        metadata = {
            **wanted,
            "schema": METADATA_SCHEMA,
            "domain": self.domain,
            "dimension": dimension,
            "state": "building",
            "revision": 0,
            "documents": 0,
            "root": str(self.root.resolve()),
            "created_at": utc_now(),
            "updated_at": utc_now(),
        }
        self.store.create_collection(name, dimension, metadata)
        return name

    def _indexed_documents(self, collection: str) -> dict[str, _Indexed]:
        indexed: dict[str, _Indexed] = defaultdict(_Indexed)
        for record in self.store.scroll(collection, _STATE_FIELDS):
            payload = record.payload or {}
            indexed[payload["doc_id"]].points.append(
                (
                    str(record.id),
                    payload.get("content_hash", ""),
                    int(payload.get("chunk_index", -1)),
                    int(payload.get("chunk_count", -1)),
                )
            )
        return dict(indexed)

    def _apply(
        self,
        target: str,
        indexed: dict[str, _Indexed],
        found: list[SourceFile],
        scan_skips: list[ScanSkip],
    ) -> bool:
        """Write the changes; True when the collection changed."""
        report = self.report
        keep: set[str] = set()  # documents whose chunks stay though the file was not read
        for skip in scan_skips:
            kept = skip.transient and skip.doc_id in indexed
            report.skipped.append(SkippedFile(skip.doc_id, skip.reason, kept_previous=kept))
            if skip.transient:
                keep.add(skip.doc_id)
        stale: list[str] = []  # old chunks of documents whose new version is complete
        pending = []
        for source in found:
            present = indexed.get(source.doc_id)
            complete = present.complete(source.content_hash) if present else None
            if present is not None and complete is not None:
                leftover = present.ids() - complete
                if leftover:  # an interrupted update: the new version is complete already
                    stale.extend(sorted(leftover))
                    report.updated.append(source.doc_id)
                else:
                    report.unchanged.append(source.doc_id)
                keep.add(source.doc_id)
            else:
                pending.append(source)
        work = self._prepare(pending, indexed, keep)
        removed = sorted(set(indexed) - keep - {w.document.doc_id for w in work})
        if work or stale or removed:
            self._mark_updating(target)
        self._embed_and_write(target, work)
        for doc_id in removed:
            stale.extend(sorted(indexed[doc_id].ids()))
        if stale:
            self.store.delete_points(target, stale)
        report.deleted.extend(removed)
        report.documents_total = len((keep & set(indexed)) | {w.document.doc_id for w in work})
        return bool(work or stale or removed)

    def _prepare(
        self, pending: list[SourceFile], indexed: dict[str, _Indexed], keep: set[str]
    ) -> list[_Work]:
        """Parse and chunk the new and changed documents."""
        work: list[_Work] = []
        if not pending:
            return work
        chunker = Chunker(
            self.embedder.tokenizer,
            self.settings.chunking.max_tokens,
            self.settings.chunking.overlap_tokens,
        )
        for number, source in enumerate(pending, start=1):
            present = indexed.get(source.doc_id)
            try:
                document = parse_document(source)
            except LoaderError as err:
                kept = present is not None
                self.report.skipped.append(SkippedFile(source.doc_id, str(err), kept))
                keep.add(source.doc_id)
                continue
            chunks = chunker.chunk(document)
            if not chunks:
                self.report.skipped.append(SkippedFile(source.doc_id, "no text found"))
                continue
            work.append(_Work(document, chunks, present.ids() if present else set(), not present))
            self.progress("chunk", number, len(pending))
        return work

    def _mark_updating(self, target: str) -> None:
        metadata = self.store.metadata(target)
        if metadata.get("state") == "building":
            return
        self._finish(target, {"state": "updating", "revision": metadata.get("revision", 0) + 1})

    def _finish(self, target: str, values: dict[str, Any]) -> None:
        values = {**values, "updated_at": utc_now()}
        if values.get("state") == "ready":
            values["documents"] = self.report.documents_total
        with self.store.lock:
            self.store.update_metadata(target, values)
            self.on_change(target)

    def _embed_and_write(self, target: str, work: list[_Work]) -> None:
        flat = [(number, chunk) for number, item in enumerate(work) for chunk in item.chunks]
        total = len(flat)
        step = self.settings.embedding.chunks_per_step
        last_of = {number: 0 for number in range(len(work))}
        for position, (number, _) in enumerate(flat):
            last_of[number] = position
        indexed_at = utc_now()
        done = 0
        self.progress("embed", 0, total)
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lorag-index-writer")
        pending: Future[None] | None = None
        try:
            for start in range(0, total, step):
                part = flat[start : start + step]
                texts = [chunk.embed_text for _, chunk in part]
                dense = self.embedder.embed_documents(texts)
                points = [
                    StoredPoint(
                        id=point_id(
                            chunk.doc_id, work[number].document.content_hash, chunk.chunk_index
                        ),
                        dense=vector.tolist(),
                        sparse=self.encoder.encode_document(text),
                        payload=self._payload(work[number], chunk, indexed_at),
                    )
                    for (number, chunk), vector, text in zip(part, dense, texts, strict=True)
                ]
                finished = sorted(
                    {number for number, _ in part if last_of[number] < start + len(part)}
                )
                stale = []
                for number in finished:
                    new_ids = {
                        point_id(c.doc_id, work[number].document.content_hash, c.chunk_index)
                        for c in work[number].chunks
                    }
                    stale.extend(sorted(work[number].old_ids - new_ids))
                if pending is not None:
                    pending.result()  # surface a write error; keep one batch in flight
                pending = writer.submit(self._write, target, points, stale)
                for number in finished:
                    item = work[number]
                    listing = self.report.added if item.is_new else self.report.updated
                    listing.append(item.document.doc_id)
                done += len(part)
                self.report.chunks_embedded = done
                self.progress("embed", done, total)
            if pending is not None:
                pending.result()
        finally:
            writer.shutdown(wait=True)

    def _write(self, target: str, points: list[StoredPoint], stale: list[str]) -> None:
        self.store.upsert(target, points)
        if stale:
            self.store.delete_points(target, stale)

    @staticmethod
    def _payload(item: _Work, chunk: Chunk, indexed_at: str) -> dict[str, Any]:
        document = item.document
        return {
            "doc_id": document.doc_id,
            "source": document.doc_id,
            "path_prefixes": path_prefixes(document.doc_id),
            "heading": chunk.heading,
            "chunk_index": chunk.chunk_index,
            "chunk_count": len(item.chunks),
            "text": chunk.text,
            "content_hash": document.content_hash,
            "indexed_at": indexed_at,
            "tags": document.tags,
            "kind": document.kind,
        }
