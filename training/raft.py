"""Retrieval-aware training samples (RAFT) from question/answer pairs and a domain's index.

For each pair the user turn holds retrieved context rendered by `retrieval.prompt.build_messages`,
the very call the server makes, so the adapter learns on the prompt it will be served:

- the gold chunk: for each `gold_doc(s)` the chunk of that document that contains the answer
  (or, if none does, the one that matches the question best); without gold documents, the
  best-ranked search hit containing the answer (or an alias), else the top hit;
- the passages, by `order`: `retrieved` (default) shows the server's own top-k for the
  question in rank order, with the gold chunk put in at a random place when retrieval missed
  it, so the adapter trains on exactly the prompts it will be served, near-duplicate
  neighbours of the gold chunk included; `shuffled` is RAFT's recipe: the gold chunk and the
  best-ranked hits of other documents (hard negatives) in a seeded random order;
- a configurable fraction of samples holds no passage with the answer, so the model also
  learns to answer when retrieval misses; `samples_per_pair` draws each pair several times
  (in `retrieved` order the first draw is the served prompt, the others show the same
  passages in a random order, so the adapter learns to find the answer by content);
- the assistant turn is the answer, followed by the gold passage's number (`[2]`) when
  `cite` is set, as the shared instruction asks the model to cite.

QA JSONL lines: `{"question", "answer", "aliases"?: [...], "gold_doc"?: id, "gold_docs"?: [...]}`
with document ids as the index knows them (paths relative to the indexed root).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from contracts.manifest import DataFile
from retrieval.prompt import build_messages
from training.data import DataError, Example, Text, sha256_file, validate_lines
from training.settings import RaftSettings


class Chunk(Protocol):
    """A retrieved chunk (`retrieval.Hit` satisfies it)."""

    @property
    def doc_id(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def heading(self) -> str: ...
    @property
    def chunk_index(self) -> int: ...
    @property
    def text(self) -> str: ...


class PassageSource(Protocol):
    """What RAFT needs from an index (`retrieval.Retriever` satisfies it)."""

    def search(
        self, domain: str, query: str, k: int = ..., doc_id: str | None = ...
    ) -> Sequence[Chunk]: ...

    def document_chunks(self, domain: str, doc_id: str) -> Sequence[Chunk]: ...


class QAPair(BaseModel):
    model_config = ConfigDict(extra="ignore")

    question: Text
    answer: Text
    aliases: list[Text] = Field(default_factory=list)
    gold_doc: Text | None = None
    gold_docs: list[Text] = Field(default_factory=list)

    def gold(self) -> list[str]:
        docs = ([self.gold_doc] if self.gold_doc else []) + self.gold_docs
        return list(dict.fromkeys(docs))


def load_qa_file(
    path: Path, skip_invalid: bool = False
) -> tuple[list[tuple[str, QAPair]], DataFile, list[str]]:
    """Validated QA pairs of a JSONL file as `("file:line", pair)`."""
    path = Path(path)
    pairs, errors = validate_lines(path, QAPair.model_validate, skip_invalid)
    return pairs, DataFile(path=str(path), sha256=sha256_file(path), records=len(pairs)), errors


@dataclass
class RaftStats:
    pairs: int = 0
    gold_from_ids: int = 0
    gold_by_answer: int = 0
    gold_assumed_top_hit: int = 0
    distractor_only: int = 0
    warnings: list[str] = field(default_factory=list)


SAMPLES_FILE = "raft-samples.jsonl"


def samples_from_qa_file(
    path: Path,
    source: PassageSource,
    domain: str,
    settings: RaftSettings,
    k: int,
    mode: str | None = None,
    skip_invalid: bool = False,
) -> tuple[list[Example], DataFile, RaftStats]:
    """A QA file's samples (see `build_raft_examples`); skipped lines become warnings."""
    pairs, info, errors = load_qa_file(path, skip_invalid)
    examples, stats = build_raft_examples(pairs, source, domain, settings, k, mode)
    stats.warnings = [f"skipped {e}" for e in errors] + stats.warnings
    return examples, info, stats


def write_samples(examples: Sequence[Example], folder: Path) -> Path:
    """`raft-samples.jsonl` in an adapter's folder: the exact prompts it learned on."""
    path = Path(folder) / SAMPLES_FILE
    with path.open("w") as out:
        for example in examples:
            out.write(json.dumps({"messages": example.messages, "origin": example.origin}) + "\n")
    return path


def _contains_answer(text: str, answers: Sequence[str]) -> bool:
    """Whether `text` holds one of `answers` as whole words (case and spacing ignored)."""
    folded = " ".join(text.lower().split())
    return any(
        re.search(rf"(?<!\w){re.escape(' '.join(a.lower().split()))}(?!\w)", folded)
        for a in answers
    )


def _key(chunk: Chunk) -> tuple[str, int]:
    return chunk.doc_id, chunk.chunk_index


def _gold_chunks(source: PassageSource, domain: str, where: str, pair: QAPair) -> list[Chunk]:
    answers = [pair.answer, *pair.aliases]
    gold = []
    for doc_id in pair.gold():
        chunks = list(source.document_chunks(domain, doc_id))
        if not chunks:
            raise DataError(f"{where}: gold_doc {doc_id!r} is not in domain {domain!r}'s index")
        with_answer = [c for c in chunks if _contains_answer(c.text, answers)]
        if len(with_answer) == 1:
            gold.append(with_answer[0])
            continue
        ranked = source.search(domain, pair.question, k=len(chunks), doc_id=doc_id)
        candidates = {_key(c) for c in with_answer} or {_key(c) for c in chunks}
        best = next((c for c in ranked if _key(c) in candidates), None)
        gold.append(best or (with_answer or chunks)[0])
    return gold


def build_raft_examples(
    pairs: Sequence[tuple[str, QAPair]],
    source: PassageSource,
    domain: str,
    settings: RaftSettings | None = None,
    k: int = 5,
    mode: str | None = None,
) -> tuple[list[Example], RaftStats]:
    """One chat example per QA pair, in the shared prompt format (see the module docstring).

    `k` is the number of passages the server retrieves for the domain: a sample holds
    `settings.distractors` distractors, or `k - 1` when that is unset. `mode` is the
    server's search mode for the domain (default: the source's own).
    """
    settings = settings or RaftSettings()
    distractors = settings.distractors if settings.distractors is not None else max(k - 1, 0)
    options = {"k": max(settings.search_k, distractors + 1)} | ({"mode": mode} if mode else {})
    stats = RaftStats(pairs=len(pairs))
    examples = []
    for start in range(0, len(pairs), _SEARCH_BATCH):
        batch = pairs[start : start + _SEARCH_BATCH]
        questions = [pair.question for _, pair in batch]
        search_many = getattr(source, "search_many", None)
        if search_many is not None:  # one batched query embedding
            results = search_many(domain, questions, **options)
        else:
            results = [source.search(domain, question, **options) for question in questions]
        for (where, pair), hits in zip(batch, results):
            gold, pool = _gold_and_pool(source, domain, where, pair, list(hits), stats)
            served = list(hits)[:k]
            for variant in range(settings.samples_per_pair):
                rng = random.Random(
                    f"lorag-raft:{settings.seed}:{pair.question}:{pair.answer}:{variant}"
                )
                with_gold = rng.random() >= settings.distractor_only_fraction or not pool
                if settings.order == "retrieved":
                    passages = _served_passages(served, gold, pool, pair, with_gold, k, rng)
                    if variant:  # extra draws: the same passages in another order, so that
                        rng.shuffle(passages)  # the adapter reads content, not positions
                else:
                    passages = _shuffled_passages(gold, pool, with_gold, distractors, rng)
                stats.distractor_only += not with_gold
                examples.append(_example(pair, passages, gold, with_gold, settings, where))
    return examples, stats


_SEARCH_BATCH = 64


def _gold_and_pool(
    source: PassageSource,
    domain: str,
    where: str,
    pair: QAPair,
    hits: list[Chunk],
    stats: RaftStats,
) -> tuple[list[Chunk], list[Chunk]]:
    """The gold chunk(s) of a pair and its distractor candidates, best-ranked first."""
    answers = [pair.answer, *pair.aliases]
    if pair.gold():
        stats.gold_from_ids += 1
        gold_docs = set(pair.gold())
        return _gold_chunks(source, domain, where, pair), [
            h for h in hits if h.doc_id not in gold_docs
        ]
    if not hits:
        raise DataError(f"{where}: domain {domain!r}'s index returned no passages")
    found = next((h for h in hits if _contains_answer(h.text, answers)), None)
    if found is not None:
        stats.gold_by_answer += 1
    else:
        stats.gold_assumed_top_hit += 1
        stats.warnings.append(f"{where}: no passage contains the answer; top hit used")
    gold = found or hits[0]
    pool = [h for h in hits if _key(h) != _key(gold) and not _contains_answer(h.text, answers)]
    return [gold], pool


def _shuffled_passages(
    gold: list[Chunk], pool: list[Chunk], with_gold: bool, distractors: int, rng: random.Random
) -> list[Chunk]:
    """RAFT's order: gold + the best distractors (or distractors only), shuffled."""
    passages = gold + pool[:distractors] if with_gold else pool[: distractors + len(gold)]
    rng.shuffle(passages)
    return passages


def _served_passages(
    served: list[Chunk],
    gold: list[Chunk],
    pool: list[Chunk],
    pair: QAPair,
    with_gold: bool,
    k: int,
    rng: random.Random,
) -> list[Chunk]:
    """The server's top-k in rank order; the gold chunk put in (or taken out) as drawn."""
    gold_keys = {_key(g) for g in gold}
    answers = [pair.answer, *pair.aliases]
    if not with_gold:  # what a retrieval miss looks like: no passage holds the answer
        misses = [h for h in pool if not _contains_answer(h.text, answers)]
        return (misses or pool)[:k]
    if any(_key(h) in gold_keys for h in served):
        return served
    passages = [h for h in served if _key(h) not in gold_keys][: max(k - len(gold), 0)]
    for chunk in gold:
        passages.insert(rng.randint(0, len(passages)), chunk)
    return passages


def _example(
    pair: QAPair,
    passages: list[Chunk],
    gold: list[Chunk],
    with_gold: bool,
    settings: RaftSettings,
    where: str,
) -> Example:
    """The chat example: the question with its passages, then the answer (and its citation)."""
    answer = pair.answer
    if settings.cite and with_gold:
        gold_keys = {_key(g) for g in gold}
        numbers = [n for n, p in enumerate(passages, start=1) if _key(p) in gold_keys]
        if numbers:
            citation = "[" + ", ".join(str(n) for n in numbers) + "]"
            answer = f"{citation} {answer}" if settings.cite_first else f"{answer} {citation}"
    messages = build_messages(
        [{"role": "user", "content": pair.question}], passages, settings.system_prompt
    )
    return Example([*messages, {"role": "assistant", "content": answer}], where)
