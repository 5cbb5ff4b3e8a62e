"""Which layers of the question encoder can run on 8-bit weights: speed against ranking.

    .venv/bin/python benchmarks/query_quantisation.py

The example domains are indexed as the demo indexes them (64-token chunks, k=3) into a
temporary folder; then every example question (training and held-out, 238) is searched with
each encoder, one at a time: the float export (`query_backend: onnx`) and ONNX Runtime's
dynamic quantisation of it (per-channel 8-bit weights, as `onnx-int8` makes it) with some
matrix products left in float. Each row: cosine of the question vectors to the float ones
(min / mean), p50 per question (interleaved with the float encoder's, so both see the same
load), and how many questions have their answer string in the first chunk and in the top 3
(what the demo's prompt carries).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from retrieval import Retriever
from retrieval.embedding import Embedder, _resolve_location, default_onnx_cache
from retrieval.query_encoder import OnnxQueryEncoder, cache_key
from retrieval.settings import RetrievalSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from query_encoder import session  # the encoder benchmark's session settings

DOMAINS = ("acme-router", "northwind-policies")


def _variants(names: list[str]) -> dict[str, list[str]]:
    """Variant -> MatMul nodes left in float (the rest get 8-bit weights)."""

    def ffn_down(n: str) -> bool:
        return "/output/dense/" in n and "attention" not in n

    return {
        "8-bit everywhere (onnx-int8)": [],
        "FFN down-projection in float": [n for n in names if ffn_down(n)],
        "first and last layer in float": [n for n in names if "layer.0/" in n or "layer.5/" in n],
        "whole FFN in float": [n for n in names if ffn_down(n) or "intermediate" in n],
    }


def _answers(retriever: Retriever, items: dict[str, list[dict]]) -> tuple[int, int]:
    first = top3 = 0
    for domain, rows in items.items():
        for row in rows:
            hits = retriever.search(domain, row["question"], k=3)
            answer = row["answer"].lower()
            first += bool(hits) and answer in hits[0].text.lower()
            top3 += any(answer in hit.text.lower() for hit in hits)
    return first, top3


def main() -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from rich.console import Console
    from rich.table import Table

    logging.disable(logging.WARNING)  # the quantiser's pre-processing advice
    items = {
        d: [
            json.loads(line)
            for split in ("train", "heldout")
            for line in (ROOT / "examples" / d / "qa" / f"{split}.jsonl").read_text().splitlines()
            if line
        ]
        for d in DOMAINS
    }
    questions = [row["question"] for rows in items.values() for row in rows]
    with tempfile.TemporaryDirectory(prefix="lorag-quant-") as tmp:
        settings = RetrievalSettings.model_validate(
            {
                "qdrant": {"path": f"{tmp}/qdrant"},
                "chunking": {"max_tokens": 64, "overlap_tokens": 10},
                "embedding": {"query_backend": "onnx", "query_cache_size": 0},
            }
        )
        retriever = Retriever(settings)
        for domain in DOMAINS:
            retriever.index(domain, ROOT / "examples" / domain / "docs")
        float_embedder = retriever.embedder
        reference = np.concatenate([float_embedder.embed_queries([q]) for q in questions])
        model = float_embedder.load()
        model_dir = Path(_resolve_location(float_embedder.name))
        exported = default_onnx_cache() / f"{model_dir.name}-{cache_key(model_dir)}.onnx"
        names = [n.name for n in onnx.load(str(exported)).graph.node if n.op_type == "MatMul"]
        rows: list[tuple[str, str, str, str]] = []
        first, top3 = _answers(retriever, items)
        rows.append(("float (onnx)", "1 / 1", "", f"{first} / {top3}"))
        for label, keep_float in _variants(names).items():
            path = Path(tmp) / "quantised.onnx"
            quantize_dynamic(
                exported,
                path,
                weight_type=QuantType.QInt8,
                per_channel=True,
                nodes_to_exclude=keep_float,
            )
            encoder = OnnxQueryEncoder(
                session(path, 2, spinning=False),
                model.tokenizer,
                int(model.max_seq_length),
                "mean",
                True,
                True,
            )
            vectors = np.concatenate([encoder.encode([q]) for q in questions])
            cosine = (vectors * reference).sum(axis=1)
            times: dict[str, list[float]] = {"q": [], "f": []}
            for question in questions:  # interleaved with the float encoder
                for key, encode in (("q", encoder.encode), ("f", float_embedder.embed_queries)):
                    started = time.perf_counter()
                    encode([question])
                    times[key].append((time.perf_counter() - started) * 1000)
            quantised = Embedder(float_embedder.name, query_backend="onnx", query_cache_size=0)
            quantised._model, quantised._query_encoder = model, encoder
            quantised._query_encoder_tried = True
            retriever._embedder = quantised
            first, top3 = _answers(retriever, items)
            retriever._embedder = float_embedder
            rows.append(
                (
                    label,
                    f"{cosine.min():.4f} / {cosine.mean():.5f}",
                    f"{statistics.median(times['q']):.2f} ({statistics.median(times['f']):.2f})",
                    f"{first} / {top3}",
                )
            )
        retriever.close()
    table = Table(title=f"question encoder on 8-bit weights: {len(questions)} example questions")
    for column in ("encoder", "cosine to float min / mean", "p50 ms (float)", "answer 1st / top 3"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
