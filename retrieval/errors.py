"""Errors of the retrieval package, each with a message a user can act on."""

from __future__ import annotations


class RetrievalError(RuntimeError):
    """Base class: something about the index, its store or its embedding model is wrong."""


class IndexBusyError(RetrievalError):
    """The local index folder is held open by another process (or another Retriever)."""


class QdrantUnavailableError(RetrievalError):
    """The configured Qdrant server cannot be reached or refused the request."""


class EmbeddingModelError(RetrievalError):
    """The embedding model cannot be loaded."""


class DomainNotFoundError(RetrievalError):
    """A search or lookup named a domain that has no index."""


class IncompatibleIndexError(RetrievalError):
    """The index was built with another embedding model or chunking than configured now."""


class InvalidDomainError(RetrievalError, ValueError):
    """A domain name that cannot be used."""
