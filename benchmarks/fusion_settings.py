"""Hybrid fusion options side by side, on lorag's own dense and sparse lists.

    .venv/bin/python benchmarks/fusion_options.py [--corpus nodejs]

Fusion only reorders what the two searches return, so every option can be scored on the
same lists: for each question of a manual (benchmarks/<corpus>/questions.jsonl, indexed as
benchmarks/retrieval_quality.py indexes it, at the default chunking) and of the example
domains' held-out sets, the top 100 of the dense and of the sparse search are fetched once,
then each option fuses the first `depth` of each with `retrieval.fusion`'s own functions.
Columns per set: recall@1 and MRR@10 (document level), and whether the answer string is in
the first 3 and the first 5 chunks (chunk level: what a prompt carries).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from eval.dataset import load_eval_set
from eval.metrics import answer_in_context, dedup_docs, mrr_at_k, recall_at_k
from retrieval import Retriever
from retrieval.fusion import dbsf, rrf
from retrieval.settings import RetrievalSettings
from retrieval.store import Scored

Lists = list[Scored]
Fuse = Callable[[Lists, Lists], Lists]


def options() -> dict[str, Fuse]:
    out: dict[str, Fuse] = {
        "dense alone": lambda d, s: d,
        "sparse alone": lambda d, s: s,
    }
    for k in (1.0, 2.0, 5.0, 10.0, 20.0, 61.0):
        out[f"rrf k={k:g}, depth 20"] = lambda d, s, k=k: rrf([d[:20], s[:20]], 100, k)
    out["rrf k=61, depth 60"] = lambda d, s: rrf([d[:60], s[:60]], 100, 61.0)
    for depth in (10, 20, 40, 60, 100):
        out[f"dbsf, depth {depth}"] = lambda d, s, n=depth: dbsf([d[:n], s[:n]], 100)
    for weight in (0.8, 1.2):  # a weight on the dense list after DBSF's scaling
        out[f"dbsf, depth 60, dense x{weight}"] = lambda d, s, w=weight: _scaled_dbsf(d, s, w)
    return out


def _scaled_dbsf(dense: Lists, sparse: Lists, weight: float) -> Lists:
    """DBSF with the dense list's scaled scores multiplied by `weight` before the sum."""
    totals: dict[str, float] = {}
    first: dict[str, Scored] = {}
    for points, w in ((dbsf([dense[:60]], 100), weight), (dbsf([sparse[:60]], 100), 1.0)):
        for point in points:
            totals[point.id] = totals.get(point.id, 0.0) + w * point.score
            first.setdefault(point.id, point)
    ranked = sorted(totals, key=totals.__getitem__, reverse=True)
    return [Scored(i, totals[i], first[i].payload) for i in ranked]


def lists_for(corpus: str) -> dict[str, list[tuple[object, Lists, Lists]]]:
    """Per set: (item, dense top 100, sparse top 100) for each question."""
    work = ROOT / "lorag-data" / corpus
    if not (work / "docs").is_dir():
        raise SystemExit(f"{work / 'docs'} is missing: run benchmarks/retrieval_quality.py first")
    settings = RetrievalSettings(qdrant={"path": str(work / "qdrant-200-32")})
    sets = {corpus: (ROOT / "benchmarks" / corpus / "questions.jsonl", work / "docs")}
    for domain in ("acme-router", "northwind-policies"):
        folder = ROOT / "examples" / domain
        sets[domain] = (folder / "qa" / "heldout.jsonl", folder / "docs")
    out: dict[str, list[tuple[object, Lists, Lists]]] = {}
    with Retriever(settings) as retriever:
        for name, (questions, docs) in sets.items():
            retriever.index(name, docs)
            items = load_eval_set(questions)
            texts = [item.question for item in items]
            modes = [retriever.search_many(name, texts, k=100, mode=m) for m in ("dense", "sparse")]
            as_scored = [
                [
                    [Scored(f"{h.doc_id}#{h.chunk_index}", h.score, {"hit": h}) for h in row]
                    for row in m
                ]
                for m in modes
            ]
            out[name] = list(zip(items, *as_scored, strict=True))
    return out


def score(rows: list[tuple[object, Lists, Lists]], fuse: Fuse) -> str:
    r1, mrr, in3, in5 = [], [], [], []
    for item, dense, sparse in rows:
        hits = [p.payload["hit"] for p in fuse(dense, sparse)]
        docs = dedup_docs(h.doc_id for h in hits)
        r1.append(recall_at_k(docs, item.gold_docs, 1))  # type: ignore[attr-defined]
        mrr.append(mrr_at_k(docs, item.gold_docs, 10))  # type: ignore[attr-defined]
        texts = [h.text for h in hits]
        in3.append(answer_in_context(texts, item.references, 3))  # type: ignore[attr-defined]
        in5.append(answer_in_context(texts, item.references, 5))  # type: ignore[attr-defined]
    return " | ".join(f"{statistics.mean(v):.3f}" for v in (r1, mrr, in3, in5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=("valgrind", "nodejs"), default="valgrind")
    args = parser.parse_args()
    sets = lists_for(args.corpus)
    names = list(sets)
    print(f"recall@1 | mrr@10 | answer in top 3 chunks | in top 5, per set: {', '.join(names)}")
    header = " | ".join(f"{n}: r@1 | mrr | top3 | top5" for n in names)
    print(f"| option | {header} |")
    print("| --- |" + " --- |" * (4 * len(names)))
    for label, fuse in options().items():
        print(f"| {label} | " + " | ".join(score(sets[n], fuse) for n in names) + " |")


if __name__ == "__main__":
    main()
