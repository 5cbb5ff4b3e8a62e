"""What the Retriever returns: search hits, index reports and domain summaries."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk; satisfies `retrieval.prompt.Passage` (source, heading, text).

    `score` is the cosine similarity (dense), the BM25 score (sparse) or the fused score
    (hybrid: DBSF or reciprocal-rank, `retrieval.fusion`). `index_version` names the index
    state that served the hit.
    """

    doc_id: str
    source: str
    heading: str
    chunk_index: int
    text: str
    score: float
    index_version: str = ""


@dataclass(frozen=True)
class SkippedFile:
    """A file an index run did not index, and why.

    `kept_previous` is true when the file could not be read or parsed this time and the chunks
    of its last good version stay in the index.
    """

    path: str
    reason: str
    kept_previous: bool = False


@dataclass
class IndexReport:
    """The outcome of one `Retriever.index` run (document ids relative to the indexed root)."""

    domain: str
    collection: str = ""
    index_version: str = ""
    rebuilt: bool = False
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    chunks_embedded: int = 0
    chunks_total: int = 0
    documents_total: int = 0
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        """Whether the run changed the index content."""
        return bool(self.added or self.updated or self.deleted or self.rebuilt)


@dataclass(frozen=True)
class DomainInfo:
    """A summary of one domain's index."""

    name: str
    documents: int
    chunks: int
    index_version: str
    embedding_model: str
    collection: str
    dimension: int = 0
    updated_at: str = ""
