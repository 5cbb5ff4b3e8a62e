"""Per-domain document indexes in Qdrant: load, chunk, embed, index incrementally, search.

`Retriever` is the entry point; `retrieval.prompt` turns its hits into prompt context and
`contracts.manifest` is the adapter contract shared by training and serving.
"""

from retrieval.errors import (
    DomainNotFoundError,
    EmbeddingModelError,
    IncompatibleIndexError,
    IndexBusyError,
    InvalidDomainError,
    QdrantUnavailableError,
    RetrievalError,
)
from retrieval.results import DomainInfo, Hit, IndexReport, SkippedFile
from retrieval.retriever import Retriever

__all__ = [
    "DomainInfo",
    "DomainNotFoundError",
    "EmbeddingModelError",
    "Hit",
    "IncompatibleIndexError",
    "IndexBusyError",
    "IndexReport",
    "InvalidDomainError",
    "QdrantUnavailableError",
    "RetrievalError",
    "Retriever",
    "SkippedFile",
]
