"""Retrieval eval: recall@k, MRR@k, nDCG@k and answer-in-context@k per search mode.

The whole eval set is searched in one batch per mode (`Retriever.search_many`). Retrieval
metrics are document-level (see `eval.metrics`); they are computed over the items that name
gold documents. Answer-in-context is chunk-level and computed for every item.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from eval.dataset import EvalItem
from eval.metrics import (
    answer_in_context,
    dedup_docs,
    mean_or_none,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
)
from eval.report import Report, Table, bar_chart, line_chart

if TYPE_CHECKING:
    from retrieval.results import Hit

MODES = ("dense", "sparse", "hybrid")


class _Searcher(Protocol):
    def search_many(
        self, domain: str, queries: list[str], k: int = ..., mode: str = ...
    ) -> list[list[Any]]: ...


@dataclass
class ModeRun:
    mode: str
    seconds: float
    per_item: list[dict[str, Any]]
    summary: dict[str, float | None]


def score_hits(
    item: EvalItem, hits: Sequence[Hit], k_values: Sequence[int], rank_k: int
) -> dict[str, Any]:
    """The per-item metrics of one search result list."""
    ranked = dedup_docs(h.doc_id for h in hits)
    texts = [h.text for h in hits]
    all_k = sorted({*k_values, rank_k})
    row: dict[str, Any] = {
        "id": item.id,
        "line": item.line,
        "question": item.question,
        "gold_docs": list(item.gold_docs),
        "retrieved_docs": ranked[: max(all_k)],
        "hits": [
            {
                "doc_id": h.doc_id,
                "chunk_index": h.chunk_index,
                "heading": h.heading,
                "score": float(h.score),
                "index_version": getattr(h, "index_version", ""),
            }
            for h in hits[: max(all_k)]
        ],
    }
    for k in all_k:
        row[f"answer_in_context@{k}"] = answer_in_context(texts, item.references, k)
    row["answer_chunk_rank"] = next(
        (rank for rank in range(1, len(texts) + 1)
         if answer_in_context(texts[rank - 1 : rank], item.references, 1)),
        None,
    )
    if item.gold_docs:
        for k in all_k:
            row[f"recall@{k}"] = recall_at_k(ranked, item.gold_docs, k)
        row[f"mrr@{rank_k}"] = mrr_at_k(ranked, item.gold_docs, rank_k)
        row[f"ndcg@{rank_k}"] = ndcg_at_k(ranked, item.gold_docs, rank_k)
        first = next((i for i, d in enumerate(ranked, 1) if d in item.gold_docs), None)
        row["first_gold_rank"] = first
    return row


def summary_keys(k_values: Sequence[int], rank_k: int) -> list[str]:
    """The summary columns, in table order."""
    return [
        *[f"recall@{k}" for k in k_values],
        f"mrr@{rank_k}",
        f"ndcg@{rank_k}",
        *[f"answer_in_context@{k}" for k in k_values],
    ]


def run_mode(
    searcher: _Searcher,
    domain: str,
    items: Sequence[EvalItem],
    mode: str,
    k_values: Sequence[int],
    rank_k: int,
    fetch_factor: int,
) -> ModeRun:
    """Search every question in one batch and score the results."""
    depth = max([*k_values, rank_k]) * fetch_factor
    started = time.perf_counter()
    results = searcher.search_many(domain, [i.question for i in items], k=depth, mode=mode)
    seconds = time.perf_counter() - started
    if len(results) != len(items):
        raise RuntimeError(
            f"search_many returned {len(results)} result lists for {len(items)} queries"
        )
    per_item = [score_hits(i, hits, k_values, rank_k) for i, hits in zip(items, results)]
    keys = sorted({key for row in per_item for key in row if "@" in key})
    summary: dict[str, float | None] = {k: mean_or_none(r.get(k) for r in per_item) for k in keys}
    return ModeRun(mode=mode, seconds=seconds, per_item=per_item, summary=summary)


def evaluate_retrieval(
    searcher: _Searcher,
    domain: str,
    items: Sequence[EvalItem],
    modes: Sequence[str],
    k_values: Sequence[int],
    rank_k: int,
    fetch_factor: int = 3,
) -> list[ModeRun]:
    """One `ModeRun` per search mode (timed after one untimed warm-up query)."""
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown search mode(s) {unknown}; use {', '.join(MODES)}")
    if items and any(m != "sparse" for m in modes):
        # Load the embedding model before the clock starts, so queries/s compares modes.
        searcher.search_many(domain, [items[0].question], k=1, mode="dense")
    return [run_mode(searcher, domain, items, m, k_values, rank_k, fetch_factor) for m in modes]


def build_report(
    runs: Sequence[ModeRun],
    domain: str,
    evalset: str,
    items: Sequence[EvalItem],
    k_values: Sequence[int],
    rank_k: int,
) -> Report:
    """Tables, plots and per-question results of a retrieval eval."""
    keys = summary_keys(k_values, rank_k)
    with_gold = sum(1 for i in items if i.gold_docs)
    table = Table(
        title=f"Retrieval: {domain}",
        headers=["mode", *keys, "queries/s"],
        rows=[
            [r.mode, *[r.summary.get(k) for k in keys], len(items) / max(r.seconds, 1e-9)]
            for r in runs
        ],
        note=(
            f"{len(items)} questions, {with_gold} with gold documents (recall, MRR and nDCG "
            "are averaged over those). recall/MRR/nDCG are document-level (hits deduplicated "
            "by document); answer-in-context@k looks at the first k chunks."
        ),
    )
    all_k = list(range(1, max([*k_values, rank_k]) + 1))
    # The line chart wants every k; recompute cheaply from the stored rankings.
    panels: dict[str, dict[str, list[float | None]]] = {"recall@k": {}, "nDCG@k": {}}
    for run in runs:
        gold_rows = [r for r in run.per_item if r["gold_docs"]]
        panels["recall@k"][run.mode] = [
            mean_or_none(recall_at_k(r["retrieved_docs"], r["gold_docs"], k) for r in gold_rows)
            for k in all_k
        ]
        panels["nDCG@k"][run.mode] = [
            mean_or_none(ndcg_at_k(r["retrieved_docs"], r["gold_docs"], k) for r in gold_rows)
            for k in all_k
        ]
    panels["answer-in-context@k"] = {
        run.mode: [
            mean_or_none(
                float(r["answer_chunk_rank"] is not None and r["answer_chunk_rank"] <= k)
                for r in run.per_item
            )
            for k in all_k
        ]
        for run in runs
    }
    figures = {
        "retrieval_by_k.png": line_chart(f"Retrieval metrics by k: {domain}", all_k, panels),
        "modes.png": bar_chart(
            f"Search modes side by side: {domain}",
            keys,
            {r.mode: [r.summary.get(k) for k in keys] for r in runs},
        ),
    }
    results = [{"mode": r.mode, **row} for r in runs for row in r.per_item]
    summary = {
        "modes": {r.mode: {**r.summary, "seconds": r.seconds} for r in runs},
        "questions": len(items),
        "with_gold_docs": with_gold,
    }
    return Report(
        kind="retrieval",
        title=f"Retrieval eval: {domain}",
        params={
            "domain": domain,
            "evalset": evalset,
            "modes": [r.mode for r in runs],
            "k_values": list(k_values),
            "rank_k": rank_k,
        },
        summary=summary,
        results=results,
        tables=[table],
        figures=figures,
    )
