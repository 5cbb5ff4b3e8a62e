"""The ONNX query encoder gives sentence-transformers' vectors, caches its export, and falls
back to PyTorch when it cannot be used."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from retrieval import query_encoder
from retrieval.embedding import Embedder, _resolve_location
from retrieval.query_encoder import OnnxQueryEncoder, _cpu_has_vnni, cache_key

QUESTIONS = [
    "What is the default value of --leak-check?",
    "How do I reset the router to factory settings?",
    "x",
    "memory " * 400,  # longer than the model's 256 tokens: truncated the same way
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def onnx_embedder(cache: Path) -> Embedder:
    embedder = Embedder("all-MiniLM-L6-v2", query_backend="onnx", onnx_cache_dir=cache)
    embedder.embed_queries(QUESTIONS[:1])  # exports once for the module
    return embedder


def test_onnx_vectors_match_sentence_transformers(onnx_embedder: Embedder) -> None:
    assert onnx_embedder._query_encoder is not None
    onnx_embedder.clear_query_cache()
    together = onnx_embedder.embed_queries(QUESTIONS)  # one padded batch
    reference = onnx_embedder._encode(QUESTIONS)  # sentence-transformers on PyTorch
    assert together.shape == reference.shape == (len(QUESTIONS), 384)
    np.testing.assert_allclose(together, reference, atol=1e-5)
    onnx_embedder.clear_query_cache()
    alone = np.stack([onnx_embedder.embed_queries([q])[0] for q in QUESTIONS])
    np.testing.assert_allclose(alone, reference, atol=1e-5)


def test_the_export_is_cached_and_keyed_by_the_model_files(
    onnx_embedder: Embedder, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [exported] = cache.glob("*.onnx")
    assert not list(cache.glob("*.tmp"))

    def no_export(*args: object) -> bytes:
        raise AssertionError("exported again although the cache holds the model")

    monkeypatch.setattr(query_encoder, "_export", no_export)
    model_dir = Path(_resolve_location("all-MiniLM-L6-v2"))
    again = OnnxQueryEncoder.load(onnx_embedder.load(), model_dir, cache)
    np.testing.assert_allclose(
        again.encode(QUESTIONS[:2]), onnx_embedder._encode(QUESTIONS[:2]), atol=1e-5
    )
    assert list(cache.glob("*.onnx")) == [exported]

    copy = tmp_path / "model"
    copy.mkdir()
    (copy / "config.json").write_text("{}")
    before = cache_key(copy)
    (copy / "config.json").write_text('{"changed": true}')
    assert cache_key(copy) != before


def test_a_model_it_cannot_export_stays_on_pytorch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object) -> bytes:
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(query_encoder, "_export", broken)
    embedder = Embedder("all-MiniLM-L6-v2", query_backend="onnx", onnx_cache_dir=tmp_path)
    with caplog.at_level(logging.WARNING):
        vectors = embedder.embed_queries(QUESTIONS[:2])
    assert embedder._query_encoder is None
    assert "query embedding stays on PyTorch" in caplog.text and "exporter exploded" in caplog.text
    np.testing.assert_allclose(vectors, embedder._encode(QUESTIONS[:2]), atol=1e-6)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_torch_backend_never_exports(tmp_path: Path) -> None:
    embedder = Embedder("all-MiniLM-L6-v2", query_backend="torch", onnx_cache_dir=tmp_path)
    embedder.embed_queries(QUESTIONS[:1])
    assert embedder._query_encoder is None and not list(tmp_path.iterdir())


def test_int8_backend_quantises_once_and_stays_close(
    onnx_embedder: Embedder, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedder = Embedder("all-MiniLM-L6-v2", query_backend="onnx-int8", onnx_cache_dir=cache)
    vectors = embedder.embed_queries(QUESTIONS)
    assert embedder._query_encoder is not None
    [quantised] = cache.glob("*-int8*.onnx")
    assert quantised.name.endswith("-int8.onnx" if _cpu_has_vnni() else "-int8-7bit.onnx")
    assert (
        quantised.stat().st_size
        < 0.4 * next(p for p in cache.glob("*.onnx") if p != quantised).stat().st_size
    )
    assert not list(cache.glob("*.tmp"))
    reference = onnx_embedder._encode(QUESTIONS)
    cosine = (vectors * reference).sum(axis=1)
    assert cosine.min() > 0.97, cosine  # close, but not the float model's vectors
    assert not np.allclose(vectors, reference, atol=1e-4)
    # a question's vector does not depend on the questions encoded in the same call
    alone = np.concatenate([embedder._encode_queries([q]) for q in reversed(QUESTIONS)])
    np.testing.assert_array_equal(alone[::-1], vectors)

    from onnxruntime import quantization

    def no_quantising(*args: object, **kwargs: object) -> None:
        raise AssertionError("quantised again although the cache holds the model")

    monkeypatch.setattr(quantization, "quantize_dynamic", no_quantising)
    model_dir = Path(_resolve_location("all-MiniLM-L6-v2"))
    again = OnnxQueryEncoder.load(embedder.load(), model_dir, cache, int8=True)
    np.testing.assert_allclose(again.encode(QUESTIONS), vectors, atol=1e-6)


def test_weight_range_follows_the_cpus_dot_product_instructions(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert not _cpu_has_vnni(cpuinfo)  # AVX2/AVX-512 without VNNI: 7-bit weights
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni amx_int8\n")
    assert _cpu_has_vnni(cpuinfo)
    cpuinfo.write_text("flags\t\t: fpu avx2 avx_vnni\n")
    assert _cpu_has_vnni(cpuinfo)
    assert not _cpu_has_vnni(tmp_path / "missing")  # not Linux: the cautious answer
