"""Retrieval benchmark: indexing throughput against raw `SentenceTransformer.encode`, and
query latency per search mode, on a generated corpus, for each store backend side by side.

    .venv/bin/python benchmarks/retrieval.py               # about 10,000 chunks, both backends
    .venv/bin/python benchmarks/retrieval.py --chunks 1000 # a quick run
    .venv/bin/python benchmarks/retrieval.py --chunks 100000 --random-document-vectors \
        --backends edge                                    # the embedded engine at scale

Backends: `edge` is the embedded engine (the default, `retrieval.qdrant.path`); `server` is
qdrant-client against `--server-url`, which defaults to ":memory:" (qdrant-client's
in-memory mode, brute force in Python: the stand-in when no server runs; give a real URL to
measure a server).

Goals: `Retriever.index` throughput at least 0.9x raw encoding of the same chunk texts (the
exact texts the Retriever embeds: heading path + chunk); hybrid p50 at most 15 ms, query
embedding included. Latency is split into the query embedding and the Qdrant call, so a
missed goal shows where the time goes.

`--random-document-vectors` replaces only the model's compute for *documents* with random
unit vectors (queries still use the real model, sparse vectors are real): it measures Qdrant's
query latency at full scale and the indexing pipeline's own cost (loading, chunking, sparse
vectors, writes) in minutes, where real embedding of 10,000 chunks takes most of an hour on a
busy 2-core machine. Its table says so, and it has no throughput ratio.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
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

from retrieval import Retriever
from retrieval.chunking import Chunker
from retrieval.embedding import Embedder
from retrieval.loaders import parse_document, scan_folder
from retrieval.retriever import _filter, _request
from retrieval.settings import RetrievalSettings

SECTIONS_PER_DOC = 10
DOMAIN = "bench"
console = Console()

_WORD_TEXT = """
the a of to and in is for on with as by that this be are from at or an it can when each which
use set run node port cache queue index disk memory server client request token limit error
retry timeout backup restore upgrade policy user account group role network route packet
firewall rule log metric alert threshold schedule job worker cluster replica shard leader
follower snapshot ledger pouch invoice refund shipping warranty device firmware sensor battery
voltage current power fan speed temperature
"""
_WORDS = _WORD_TEXT.split()


def _pseudo_words(rng: random.Random, count: int) -> list[str]:
    syllables = ["ka", "lo", "mi", "ren", "to", "sa", "vi", "dor", "ul", "en", "qua", "zi"]
    return ["".join(rng.choice(syllables) for _ in range(rng.randint(2, 3))) for _ in range(count)]


def generate_corpus(root: Path, chunks: int, parts: int, seed: int = 0) -> list[Path]:
    """Markdown documents of SECTIONS_PER_DOC sections (about a chunk each), in `parts`
    folders of about equal size; returns the part folders."""
    rng = random.Random(seed)
    vocabulary = _WORDS * 3 + _pseudo_words(rng, 3000)
    documents = max(parts, round(chunks / SECTIONS_PER_DOC))
    folders = [root / f"part{number:02d}" for number in range(parts)]
    for number in range(documents):
        lines = [f"# Component {number}\n"]
        for section in range(SECTIONS_PER_DOC):
            lines.append(f"## Topic {number}.{section} {rng.choice(vocabulary)}\n")
            sentences = []
            for _ in range(rng.randint(4, 6)):
                words = [rng.choice(vocabulary) for _ in range(rng.randint(8, 14))]
                sentences.append(" ".join(words).capitalize() + ".")
            lines.append(" ".join(sentences) + "\n")
        folder = folders[number * parts // documents] / f"area{number % 20:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"doc{number:05d}.md").write_text("\n".join(lines))
    return folders


def chunk_texts(root: Path, embedder: Embedder, settings: RetrievalSettings) -> list[str]:
    """The exact texts `Retriever.index` embeds for this folder."""
    found, _ = scan_folder(root, int(settings.max_file_mb * 1024 * 1024))
    chunker = Chunker(
        embedder.tokenizer, settings.chunking.max_tokens, settings.chunking.overlap_tokens
    )
    return [c.embed_text for source in found for c in chunker.chunk(parse_document(source))]


class RandomDocumentEmbedder(Embedder):
    """The real model for queries; random unit vectors for documents (see the docstring)."""

    def __init__(self, inner: Embedder, seed: int) -> None:
        super().__init__(inner.name, inner.device, inner.batch_size)
        self._model = inner.load()
        self._chunk_tokenizer = inner.tokenizer
        self._rng = np.random.default_rng(seed)

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        vectors = self._rng.standard_normal((len(texts), self.dimension)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=10_000, help="corpus size in chunks")
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="paired rounds: each raw-encodes one part of the corpus and indexes it (adding "
        "it to the same domain), in alternating order, so both see the same machine load",
    )
    parser.add_argument("--queries", type=int, default=40, help="queries per mode")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument(
        "--questions",
        choices=("generated", "examples"),
        default="generated",
        help="queries: 8 consecutive words of generated chunks, or the example domains' real "
        "held-out questions (typical questions, about 13 word pieces)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--query-backend",
        choices=("onnx", "onnx-int8", "torch"),
        default=RetrievalSettings().embedding.query_backend,
        help="how the searches embed questions (default: lorag's default)",
    )
    parser.add_argument("--backends", default="edge,server", help="comma-separated: edge,server")
    parser.add_argument("--server-url", default=":memory:", help="Qdrant URL of `server`")
    parser.add_argument(
        "--random-document-vectors",
        action="store_true",
        help="skip the model for documents (Qdrant latency and pipeline cost only)",
    )
    args = parser.parse_args()
    backends = [name.strip() for name in args.backends.split(",") if name.strip()]

    with tempfile.TemporaryDirectory(prefix="lorag-bench-") as tmp:
        work = Path(tmp)
        parts = generate_corpus(work / "staging", args.chunks, args.rounds, args.seed)
        base = RetrievalSettings()
        embedder = Embedder(
            base.embedding.model,
            batch_size=base.embedding.batch_size,
            query_backend=args.query_backend,
            onnx_cache_dir=base.embedding.onnx_cache_dir,
        )
        model = embedder.load()
        model.encode(["warm-up"] * 64, batch_size=base.embedding.batch_size)
        results = {}
        for backend in backends:
            qdrant = (
                {"path": str(work / f"qdrant-{backend}")}
                if backend == "edge"
                else {"url": args.server_url}
            )
            settings = RetrievalSettings.model_validate({"qdrant": qdrant})
            console.print(f"[bold]{backend}[/]: indexing {args.chunks} chunks …")
            label = (
                "embedded engine (qdrant-edge)"
                if backend == "edge"
                else f"qdrant-client ({args.server_url})"
            )
            results[label] = run_backend(settings, parts, work / f"docs-{backend}", embedder, args)
    print_table(results, args, embedder.model_id)


def run_backend(
    settings: RetrievalSettings,
    parts: list[Path],
    docs: Path,
    embedder: Embedder,
    args: argparse.Namespace,
) -> dict[str, object]:
    """Index the corpus part by part into one backend, then measure search latency."""
    synthetic = args.random_document_vectors
    model = embedder.load()
    docs.mkdir()
    indexer = RandomDocumentEmbedder(embedder, args.seed) if synthetic else embedder
    texts: list[str] = []
    chunk_seconds = raw_seconds = index_seconds = 0.0
    round_ratios: list[float] = []
    load_before = os.getloadavg()[0]
    rss_before = _rss_mib()
    with Retriever(settings, embedder=indexer) as retriever:
        for number, part in enumerate(parts):
            started = time.perf_counter()
            part_texts = chunk_texts(part, embedder, settings)
            chunk_seconds += time.perf_counter() - started
            texts.extend(part_texts)
            shutil.copytree(part, docs / part.name)

            def raw(part_texts: list[str] = part_texts) -> float:
                started = time.perf_counter()
                model.encode(part_texts, batch_size=settings.embedding.batch_size)
                return time.perf_counter() - started

            def index(expected: int = len(part_texts)) -> float:
                started = time.perf_counter()
                report = retriever.index(DOMAIN, docs)
                assert report.chunks_embedded == expected, (report.chunks_embedded, expected)
                return time.perf_counter() - started

            if synthetic:
                index_seconds += index()
                continue
            if number % 2 == 0:
                raw_part, index_part = raw(), index()
            else:
                index_part, raw_part = index(), raw()
            raw_seconds += raw_part
            index_seconds += index_part
            round_ratios.append(raw_part / index_part)
            console.print(
                f"round {number + 1}/{len(parts)}: {len(part_texts)} chunks, raw "
                f"{raw_part:.0f} s, index {index_part:.0f} s, ratio "
                f"{raw_part / index_part:.2f}, load {os.getloadavg()[0]:.1f}"
            )
        rss_indexed = _rss_mib()
        console.print(f"corpus: {len(texts)} chunks; {args.queries} queries per mode …")
        latency, encoders = measure_latency(retriever, texts, args)
    disk = sum(
        f.stat().st_blocks * 512 for f in Path(settings.qdrant.path).rglob("*") if f.is_file()
    )
    return {
        "chunks": len(texts),
        "chunk_seconds": chunk_seconds,
        "raw_seconds": raw_seconds,
        "index_seconds": index_seconds,
        "round_ratios": round_ratios,
        "latency": latency,
        "encoders": encoders,
        "rss": (rss_before, rss_indexed),
        "disk_mib": disk / 2**20 if settings.qdrant.url is None else None,
        "load": (load_before, os.getloadavg()[0]),
    }


def _rss_mib() -> float:
    """This process's resident memory now (MiB), from /proc; peak where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def print_table(results: dict[str, dict], args: argparse.Namespace, model_id: str) -> None:
    first = next(iter(results.values()))
    title = f"lorag retrieval benchmark: {first['chunks']} chunks"
    if args.random_document_vectors:
        title += " (RANDOM document vectors: no throughput ratio)"
    table = Table(title=title)
    table.add_column("measure")
    for backend in results:
        table.add_column(backend)
    table.add_column("goal")

    def row(label: str, cell, goal: str = "") -> None:
        table.add_row(label, *[cell(r) for r in results.values()], goal)

    row("chunking (load + tokenize)", lambda r: f"{r['chunk_seconds']:.1f} s")
    if args.random_document_vectors:
        row(
            "Retriever.index without document embedding",
            lambda r: (
                f"{r['chunks'] / r['index_seconds']:.0f} chunks/s ({r['index_seconds']:.0f} s)"
            ),
        )
    else:
        row("raw encode", lambda r: f"{r['chunks'] / r['raw_seconds']:.1f} chunks/s")
        row("Retriever.index", lambda r: f"{r['chunks'] / r['index_seconds']:.1f} chunks/s")

        def ratio(r: dict) -> str:
            value = r["raw_seconds"] / r["index_seconds"]
            return f"{value:.2f} {'yes' if value >= 0.9 else 'NO'}"

        row("index / raw", ratio, ">= 0.90")
        row(
            "  per round (min / median / max)",
            lambda r: (
                f"{min(r['round_ratios']):.2f} / "
                f"{statistics.median(r['round_ratios']):.2f} / {max(r['round_ratios']):.2f}"
            ),
        )
    for mode in ("dense", "sparse", "hybrid"):

        def total(r: dict, mode: str = mode) -> str:
            totals = r["latency"][mode][0]
            p50 = percentile(totals, 0.5) * 1000
            text = f"{p50:.1f} / {percentile(totals, 0.95) * 1000:.1f} ms"
            return text + (f" {'yes' if p50 <= 15 else 'NO'}" if mode == "hybrid" else "")

        def split(r: dict, mode: str = mode) -> str:
            embeds, stores = r["latency"][mode][1], r["latency"][mode][2]
            return (
                f"{statistics.median(embeds) * 1000:.1f} + "
                f"{statistics.median(stores) * 1000:.1f} ms"
            )

        row(f"{mode} p50 / p95", total, "hybrid p50 <= 15 ms" if mode == "hybrid" else "")
        row("  p50 query encoding + store", split)
        row(
            "  p50 repeated question (query cache)",
            lambda r, mode=mode: f"{percentile(r['latency'][mode][3], 0.5) * 1000:.1f} ms",
        )
    row(
        "query encoding p50: onnx / onnx-int8 / torch / torch on 1 thread",
        lambda r: " / ".join(
            f"{statistics.median(r['encoders'][n]) * 1000:.1f} ms"
            for n in ("onnx", "onnx-int8", "torch", "torch-1")
        ),
        "<= 10 ms",
    )
    row(
        "process RSS before / after indexing",
        lambda r: f"{r['rss'][0]:.0f} / {r['rss'][1]:.0f} MiB",
    )
    row(
        "index on disk",
        lambda r: "" if r["disk_mib"] is None else f"{r['disk_mib']:.0f} MiB",
    )
    row("load average before / after", lambda r: f"{r['load'][0]:.1f} / {r['load'][1]:.1f}")
    table.caption = f"{os.cpu_count()} CPUs; model {model_id}"
    console.print(table)


def measure_latency(
    retriever: Retriever, texts: list[str], args: argparse.Namespace
) -> tuple[dict[str, tuple[list[float], ...]], dict[str, list[float]]]:
    """Per mode: total search time (query cache cleared), the same search split into query
    encoding and the store call, and the same search repeated (a query-cache hit); then the
    query encoding alone: ONNX, ONNX with 8-bit weights, torch, and torch on one thread."""
    rng = random.Random(args.seed + 1)
    queries = []
    if args.questions == "examples":
        from eval.dataset import load_eval_set

        root = Path(__file__).resolve().parents[1] / "examples"
        held_out = [
            item.question
            for domain in ("acme-router", "northwind-policies")
            for item in load_eval_set(root / domain / "qa" / "heldout.jsonl")
        ]
        queries = rng.sample(held_out, min(args.queries, len(held_out)))
    else:
        for text in rng.sample(texts, min(args.queries, len(texts))):
            words = text.split("\n", 1)[-1].split()
            start = rng.randint(0, max(0, len(words) - 8))
            queries.append(" ".join(words[start : start + 8]))
    latency = {}
    for mode in ("dense", "sparse", "hybrid"):
        for query in queries[:3]:  # warm-up
            retriever.search(DOMAIN, query, k=args.k, mode=mode)  # type: ignore[arg-type]
        totals, embeds, stores, cached = [], [], [], []
        for query in queries:
            retriever.embedder.clear_query_cache()  # every question is new to the model
            started = time.perf_counter()
            retriever.search(DOMAIN, query, k=args.k, mode=mode)  # type: ignore[arg-type]
            totals.append(time.perf_counter() - started)
            started = time.perf_counter()
            retriever.search(DOMAIN, query, k=args.k, mode=mode)  # type: ignore[arg-type]
            cached.append(time.perf_counter() - started)
            retriever.embedder.clear_query_cache()
            started = time.perf_counter()
            dense = (
                retriever.embedder.embed_queries([query])[0].tolist() if mode != "sparse" else None
            )
            sparse = retriever._encoder.encode_query(query) if mode != "dense" else None
            embeds.append(time.perf_counter() - started)
            request = _request(mode, dense, sparse, args.k, _filter(None, None, None))
            started = time.perf_counter()
            retriever._query(DOMAIN, [request])
            stores.append(time.perf_counter() - started)
        latency[mode] = (totals, embeds, stores, cached)
    # The ONNX encoders against sentence-transformers on torch, with its default threads and
    # with one (on a busy machine two OpenMP threads waiting for each other can
    # cost more than the tiny matmuls of one question).
    import torch

    shared = retriever.embedder
    others = {b: Embedder(shared.name, query_backend=b) for b in ("onnx", "onnx-int8", "torch")}
    for other in others.values():
        other._model = shared.load()
    encoders: dict[str, list[float]] = {}
    threads = torch.get_num_threads()
    for name, embedder, n in (
        ("onnx", others["onnx"], threads),
        ("onnx-int8", others["onnx-int8"], threads),
        ("torch", others["torch"], threads),
        ("torch-1", others["torch"], 1),
    ):
        times = encoders.setdefault(name, [])
        embedder.embed_queries(queries[:1])  # loads (or exports) the encoder untimed
        try:
            torch.set_num_threads(n)
            for query in queries:
                embedder.clear_query_cache()
                started = time.perf_counter()
                embedder.embed_queries([query])
                times.append(time.perf_counter() - started)
        finally:
            torch.set_num_threads(threads)
    return latency, encoders


if __name__ == "__main__":
    main()
