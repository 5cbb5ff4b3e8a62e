"""Search latency of the embedded engine at scale (100k, 1M chunks), writing points directly.

    .venv/bin/python benchmarks/retrieval_scale.py --chunks 100000
    .venv/bin/python benchmarks/retrieval_scale.py --chunks 1000000 --queries 50

At a million chunks the writes and the HNSW build take most of an hour on 2 cores; with
`--keep DIR` the built index stays in DIR (with its build figures and a sample of its texts
for the questions) and a later run with the same `--keep` only searches, so the latency can
be measured on a quiet machine.

`benchmarks/retrieval.py` runs the whole indexing pipeline (files, chunking, embedding); at a
million chunks that alone takes hours on 2 cores. This script measures what the goal at
scale is about, the store's search latency: it writes generated chunks (random unit dense
vectors, real BM25 sparse vectors of generated text, lorag's payload) straight into one
domain's collection with the same metadata an index run writes, builds HNSW as an index run
does, and then searches through `Retriever.search` with the real query model.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks.retrieval import _WORDS, _pseudo_words, _rss_mib, measure_latency, percentile
from retrieval import Retriever
from retrieval.indexer import METADATA_SCHEMA, index_settings_of, point_id
from retrieval.settings import RetrievalSettings
from retrieval.store import StoredPoint, utc_now

DOMAIN = "bench"
console = Console()


def chunk_text(rng: random.Random, vocabulary: list[str]) -> str:
    sentences = []
    for _ in range(rng.randint(4, 6)):
        words = [rng.choice(vocabulary) for _ in range(rng.randint(8, 14))]
        sentences.append(" ".join(words).capitalize() + ".")
    return " ".join(sentences)


def fill(retriever: Retriever, chunks: int, seed: int) -> tuple[list[str], float, float]:
    """Write `chunks` generated chunks into a new collection behind the domain's alias; the
    texts, the write seconds and the HNSW build seconds."""
    store, embedder, encoder = retriever._store, retriever.embedder, retriever._encoder
    rng = random.Random(seed)
    vectors = np.random.default_rng(seed)
    vocabulary = _WORDS * 3 + _pseudo_words(rng, 3000)
    name = store.new_collection_name(DOMAIN)
    metadata = {
        **index_settings_of(embedder, encoder, retriever.settings),
        "schema": METADATA_SCHEMA,
        "domain": DOMAIN,
        "dimension": embedder.dimension,
        "state": "building",
        "revision": 0,
        "documents": chunks // 10,
        "created_at": utc_now(),
    }
    store.create_collection(name, embedder.dimension, metadata)
    texts: list[str] = []
    write_seconds = 0.0
    batch = 4096
    for start in range(0, chunks, batch):
        count = min(batch, chunks - start)
        dense = vectors.standard_normal((count, embedder.dimension)).astype(np.float32)
        dense /= np.linalg.norm(dense, axis=1, keepdims=True)
        points = []
        for offset in range(count):
            number = start + offset
            doc_id = f"part{number % 7}/doc{number // 10:06d}.md"
            text = chunk_text(rng, vocabulary)
            texts.append(text)
            payload = {
                "doc_id": doc_id,
                "source": doc_id,
                "path_prefixes": [doc_id.split("/")[0], doc_id],
                "heading": f"Component {number // 10} > Topic {number % 10}",
                "chunk_index": number % 10,
                "chunk_count": 10,
                "text": text,
                "content_hash": f"{number // 10:064x}",
                "indexed_at": utc_now(),
                "tags": [],
                "kind": "markdown",
            }
            points.append(
                StoredPoint(
                    point_id(doc_id, payload["content_hash"], number % 10),
                    dense[offset].tolist(),
                    encoder.encode_document(text),
                    payload,
                )
            )
        started = time.perf_counter()
        store.upsert(name, points)
        write_seconds += time.perf_counter() - started
        if (start // batch) % 25 == 0:
            console.print(f"  {start + count} chunks written, RSS {_rss_mib():.0f} MiB")
    started = time.perf_counter()
    store.optimize(name)
    build_seconds = time.perf_counter() - started
    store.update_metadata(name, {"state": "ready", "revision": 1})
    store.switch_alias(DOMAIN, name)
    return texts, write_seconds, build_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=50, help="queries per mode")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument(
        "--questions",
        choices=("generated", "examples"),
        default="generated",
        help="queries: 8 consecutive words of generated chunks, or the example domains' real "
        "held-out questions",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="build the index here once, then reuse it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lorag-scale-") as tmp:
        folder = args.keep or Path(tmp)
        record_file = folder / "scale-build.json"
        settings = RetrievalSettings.model_validate({"qdrant": {"path": str(folder / "qdrant")}})
        with Retriever(settings) as retriever:
            retriever.embedder.load()
            if record_file.is_file():
                record = json.loads(record_file.read_text())
                if record["chunks"] != args.chunks or record["seed"] != args.seed:
                    raise SystemExit(
                        f"{folder} holds {record['chunks']} chunks (seed {record['seed']}); "
                        "use another --keep folder"
                    )
                console.print(f"reusing the index in {folder} (built {record['built_at']})")
            else:
                rss_before = _rss_mib()
                texts, write_seconds, build_seconds = fill(retriever, args.chunks, args.seed)
                record = {
                    "chunks": len(texts),
                    "seed": args.seed,
                    "built_at": utc_now(),
                    "write_seconds": write_seconds,
                    "build_seconds": build_seconds,
                    "rss_before": rss_before,
                    "rss_after": _rss_mib(),
                    "sample": random.Random(args.seed).sample(texts, min(2000, len(texts))),
                }
                if args.keep:
                    record_file.write_text(json.dumps(record))
                del texts
            latency, encoders = measure_latency(retriever, record["sample"], args)
            rss_search = _rss_mib()
        disk = (
            sum(f.stat().st_blocks * 512 for f in (folder / "qdrant").rglob("*") if f.is_file())
            / 2**20
        )
    chunks, write_seconds = record["chunks"], record["write_seconds"]
    build_seconds, rss_before, rss_after = (
        record["build_seconds"], record["rss_before"], record["rss_after"]
    )  # fmt: skip
    table = Table(title=f"embedded engine at {chunks} chunks (random dense vectors)")
    table.add_column("measure")
    table.add_column("value")
    table.add_row("writes (upsert)", f"{chunks / write_seconds:.0f} chunks/s")
    table.add_row("HNSW build (optimize)", f"{build_seconds:.0f} s")
    for mode, (totals, embeds, stores, cached) in latency.items():
        table.add_row(
            f"{mode} p50 / p95",
            f"{percentile(totals, 0.5) * 1000:.1f} / {percentile(totals, 0.95) * 1000:.1f} ms",
        )
        table.add_row(
            "  p50 query encoding + store",
            f"{percentile(embeds, 0.5) * 1000:.1f} + {percentile(stores, 0.5) * 1000:.1f} ms",
        )
        table.add_row("  p50 repeated question (cache)", f"{percentile(cached, 0.5) * 1000:.1f} ms")
    table.add_row(
        "query encoding p50: " + " / ".join(encoders).replace("torch-1", "torch on 1 thread"),
        " / ".join(f"{percentile(encoders[n], 0.5) * 1000:.1f} ms" for n in encoders),
    )
    table.add_row("process RSS before / after writing", f"{rss_before:.0f} / {rss_after:.0f} MiB")
    table.add_row("process RSS after searching (this run)", f"{rss_search:.0f} MiB")
    table.add_row("index on disk", f"{disk:.0f} MiB")
    table.caption = f"load average {os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs"
    console.print(table)


if __name__ == "__main__":
    main()
