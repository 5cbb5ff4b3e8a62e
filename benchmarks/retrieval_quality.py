"""Ranking quality on documentation the project did not write: two manuals from Debian packages.

- `valgrind` (default): the Valgrind User Manual, HTML from the package `valgrind` (39 pages;
  benchmarks/valgrind/corpus.py copies it out), 93 questions.
- `nodejs`: the Node.js 20 API reference, HTML from the package `nodejs` (63 pages, about
  3.5 MB of text; benchmarks/nodejs/corpus.py), 170 questions over 61 pages.

The questions (benchmarks/<corpus>/questions.jsonl) were written by reading the pages (look-ups
by exact name, and how-to questions in other words), each with its gold page and an answer
string found on that page.

For each variant of the retrieval settings (VARIANTS below; `default` is lorag's default
config) the script indexes the corpus with lorag, runs `lorag eval retrieval`'s library
function on all questions in each search mode, and times single queries one at a time. The
textbook baselines run on the very same chunks: BM25 (`bm25s`, its defaults: Lucene BM25,
k1=1.5, b=0.75, English stop words), all-MiniLM-L6-v2 dense (exact cosine), and reciprocal
rank fusion of the two (k=60, top 100 of each).

    python benchmarks/retrieval_quality.py [--corpus nodejs] [--variants default chunk128 ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

CORPORA = ("valgrind", "nodejs")
K_VALUES = (1, 5, 10)
RANK_K = 10

# name -> overrides of the `retrieval` settings (everything else: lorag's defaults).
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "chunk128": {"chunking": {"max_tokens": 128, "overlap_tokens": 24}},
    "chunk64": {"chunking": {"max_tokens": 64, "overlap_tokens": 10}},
    "int8": {"embedding": {"query_backend": "onnx-int8"}},  # questions on 8-bit weights
    "rrf2": {"fusion": "rrf", "rrf_k": 2.0},  # the default before DBSF
    "rrf61": {"fusion": "rrf", "rrf_k": 61.0},
    "rrf61-chunk128": {
        "fusion": "rrf",
        "rrf_k": 61.0,
        "chunking": {"max_tokens": 128, "overlap_tokens": 24},
    },
}
EXAMPLES = ("acme-router", "northwind-policies")  # the example domains must not get worse


def _settings(variant: str, work: Path):
    from retrieval.settings import RetrievalSettings

    raw: dict[str, Any] = {}
    for key, value in VARIANTS[variant].items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    chunking = RetrievalSettings(**raw).chunking  # one index per chunking, shared by variants
    folder = f"qdrant-{chunking.max_tokens}-{chunking.overlap_tokens}"
    return RetrievalSettings(**raw, qdrant={"path": str(work / folder)})


def _doc_metrics(ranked_docs: list[list[str]], gold: list[tuple[str, ...]]) -> dict[str, float]:
    from eval.metrics import dedup_docs, mrr_at_k, recall_at_k

    rows = [dedup_docs(r) for r in ranked_docs]
    out = {f"recall@{k}": statistics.mean(recall_at_k(r, g, k) for r, g in zip(rows, gold))
           for k in K_VALUES}  # fmt: skip
    out[f"mrr@{RANK_K}"] = statistics.mean(mrr_at_k(r, g, RANK_K) for r, g in zip(rows, gold))
    return out


def _baselines(
    retriever: Any, settings: Any, items: list[Any], docs_dir: Path
) -> dict[str, dict[str, float]]:
    """BM25, dense and their RRF over lorag's own chunks of the corpus."""
    import bm25s
    import numpy as np

    from retrieval.chunking import Chunker
    from retrieval.loaders import parse_document, scan_folder

    embedder = retriever.embedder
    sources, _ = scan_folder(docs_dir, int(settings.max_file_mb * 2**20))
    chunker = Chunker(
        embedder.tokenizer, settings.chunking.max_tokens, settings.chunking.overlap_tokens
    )
    chunks = [c for s in sources for c in chunker.chunk(parse_document(s))]
    texts = [c.embed_text for c in chunks]
    questions = [i.question for i in items]
    gold = [i.gold_docs for i in items]
    depth = 100

    bm25 = bm25s.BM25()
    bm25.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    started = time.perf_counter()
    ids, _ = bm25.retrieve(
        bm25s.tokenize(questions, stopwords="en", show_progress=False),
        k=depth,
        show_progress=False,
    )
    bm25_ms = (time.perf_counter() - started) * 1000 / len(items)
    bm25_ranks = [list(row) for row in ids]

    doc_vectors = embedder.embed_documents(texts)
    started = time.perf_counter()
    scores = embedder.embed_queries(questions) @ doc_vectors.T
    dense_ms = (time.perf_counter() - started) * 1000 / len(items)
    dense_ranks = [list(np.argsort(-row)[:depth]) for row in scores]

    def rrf(a: list[int], b: list[int]) -> list[int]:
        fused: dict[int, float] = {}
        for ranking in (a, b):
            for rank, index in enumerate(ranking):
                fused[index] = fused.get(index, 0.0) + 1.0 / (60 + rank + 1)
        return sorted(fused, key=fused.__getitem__, reverse=True)

    def docs(ranks: list[list[int]]) -> list[list[str]]:
        return [[chunks[i].doc_id for i in row] for row in ranks]

    rrf_ranks = [rrf(a, b) for a, b in zip(bm25_ranks, dense_ranks)]
    return {
        "BM25 (bm25s)": {**_doc_metrics(docs(bm25_ranks), gold), "ms": bm25_ms},
        "MiniLM dense (exact)": {**_doc_metrics(docs(dense_ranks), gold), "ms": dense_ms},
        "RRF(BM25, MiniLM)": {**_doc_metrics(docs(rrf_ranks), gold), "ms": bm25_ms + dense_ms},
    }


def run_variant(
    corpus: str, variant: str, with_baselines: bool, baseline_cache: dict[str, Any]
) -> list[tuple[str, dict[str, float]]]:
    from eval.dataset import load_eval_set
    from eval.retrieval_eval import evaluate_retrieval
    from retrieval import Retriever

    work, domain_name = ROOT / "lorag-data" / corpus, corpus
    settings = _settings(variant, work)
    items = load_eval_set(ROOT / "benchmarks" / corpus / "questions.jsonl")
    rows: list[tuple[str, dict[str, float]]] = []
    with Retriever(settings) as retriever:
        report = retriever.index(domain_name, work / "docs")
        print(f"# {variant}: {report.chunks_total} chunks", flush=True)
        runs = evaluate_retrieval(
            retriever, domain_name, items, ["hybrid", "dense", "sparse"], K_VALUES, RANK_K
        )
        for run in runs:
            latencies = []
            for item in items:  # one query at a time, the served path's shape
                retriever.embedder.clear_query_cache()
                started = time.perf_counter()
                retriever.search(domain_name, item.question, k=RANK_K * 3, mode=run.mode)
                latencies.append((time.perf_counter() - started) * 1000)
            summary = {k: float(v) for k, v in run.summary.items() if v is not None}
            rows.append(
                (f"lorag {run.mode} [{variant}]", {**summary, "ms": statistics.median(latencies)})
            )
        for domain in EXAMPLES:
            retriever.index(domain, ROOT / "examples" / domain / "docs")
            examples = load_eval_set(ROOT / "examples" / domain / "qa" / "heldout.jsonl")
            [run] = evaluate_retrieval(retriever, domain, examples, ["hybrid"], K_VALUES, RANK_K)
            summary = {k: float(v) for k, v in run.summary.items() if v is not None}
            rows.append((f"lorag hybrid [{variant}] {domain}", {**summary, "ms": float("nan")}))
        if with_baselines:  # they depend on the chunking only: computed once per chunking
            key = Path(str(settings.qdrant.path)).name
            if key not in baseline_cache:
                baseline_cache[key] = _baselines(retriever, settings, items, work / "docs")
            rows += [(f"{name} [{variant}]", m) for name, m in baseline_cache[key].items()]
    return rows


def main() -> None:
    from eval.dataset import load_eval_set

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=CORPORA, default="valgrind")
    parser.add_argument("--variants", nargs="+", default=["default"], choices=sorted(VARIANTS))
    parser.add_argument("--no-baselines", action="store_true")
    args = parser.parse_args()
    docs = ROOT / "lorag-data" / args.corpus / "docs"
    if not docs.is_dir():
        script = ROOT / "benchmarks" / args.corpus / "corpus.py"
        spec = importlib.util.spec_from_file_location(f"{args.corpus}_corpus", script)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.extract(docs)
    rows: list[tuple[str, dict[str, float]]] = []
    baseline_cache: dict[str, Any] = {}
    for variant in args.variants:
        rows += run_variant(args.corpus, variant, not args.no_baselines, baseline_cache)
    keys = [*(f"recall@{k}" for k in K_VALUES), f"mrr@{RANK_K}", "answer_in_context@5"]
    questions = load_eval_set(ROOT / "benchmarks" / args.corpus / "questions.jsonl")
    print(
        f"\n{args.corpus}: {len(questions)} questions, document-level metrics; ms = p50 per query "
        "(lorag: one search call, query embedding included; baselines: batch time / query)"
    )
    print("| configuration | " + " | ".join(keys) + " | ms |")
    print("| --- |" + " --- |" * (len(keys) + 1))
    for name, m in rows:
        cells = [f"{m[k]:.3f}" if k in m else "–" for k in keys]
        print(f"| {name} | " + " | ".join(cells) + f" | {m['ms']:.1f} |")


if __name__ == "__main__":
    main()
