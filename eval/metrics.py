"""Metric functions: pure, deterministic, no I/O.

Retrieval metrics work at the document level. A search returns chunks; `dedup_docs` turns the
ranked chunk list into a ranked list of distinct document ids (each document at the rank of its
best chunk), and metrics@k look at the first k documents of that list. Relevance is binary: a
document is relevant when it is one of the item's gold documents.

Answer metrics compare text after SQuAD-style normalisation (`normalise`): lower case,
punctuation removed, the articles a/an/the removed, whitespace collapsed.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from statistics import fmean

import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans({ch: " " for ch in string.punctuation})
# [1], [2, 3], [1][4]: numbered citations as the shared prompt asks for them.
_CITATION = re.compile(r"\[(\s*\d+(?:\s*,\s*\d+)*\s*)\]")

# Function words that carry no claim: left out of groundedness.
_STOPWORD_TEXT = """
    a an the and or but if then else of to in on at by for with from into onto over under
    about as is are was were be been being am do does did doing have has had having
    i me my we our you your he him his she her it its they them their this that these those
    there here what which who whom whose when where why how not no nor so than too very
    can could will would shall should may might must also just only all any both each
    few more most other some such same own up down out off again further once s t
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


# --- text normalisation -------------------------------------------------------------------


def normalise(text: str) -> str:
    """SQuAD normalisation: lower case, punctuation and articles removed, spaces collapsed.

    Punctuation becomes a space (so `foo-bar` gives `foo bar`), which keeps containment checks
    on word boundaries.
    """
    text = text.lower().translate(_PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def tokens(text: str) -> list[str]:
    """The normalised words of `text`."""
    return normalise(text).split()


def _contains(haystack: str, needle: str) -> bool:
    """Whether normalised `needle` occurs in normalised `haystack` on word boundaries."""
    needle_norm = normalise(needle)
    if not needle_norm:
        return False
    return f" {needle_norm} " in f" {normalise(haystack)} "


# --- answer metrics -----------------------------------------------------------------------


def exact_match(prediction: str, references: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised reference, else 0.0.

    `[n]` citation markers in the prediction are ignored (here and in the other answer metrics).
    """
    pred = normalise(strip_citations(prediction))
    return float(any(pred == normalise(ref) for ref in references))


def _f1(prediction: list[str], reference: list[str]) -> float:
    if not prediction or not reference:
        return float(prediction == reference)
    common = Counter(prediction) & Counter(reference)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(prediction)
    recall = overlap / len(reference)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, references: Sequence[str]) -> float:
    """SQuAD token F1 (bag of normalised words), the best over the references."""
    pred = tokens(strip_citations(prediction))
    return max((_f1(pred, tokens(ref)) for ref in references), default=0.0)


def answer_contained(prediction: str, references: Sequence[str]) -> float:
    """1.0 when any normalised reference occurs, as whole words, in the normalised prediction."""
    return float(any(_contains(strip_citations(prediction), ref) for ref in references))


def strip_citations(text: str) -> str:
    """`text` without `[n]` citation markers."""
    return _CITATION.sub(" ", text)


def content_tokens(text: str) -> list[str]:
    """Normalised words of `text` that carry content: citations and stopwords left out."""
    return [t for t in tokens(strip_citations(text)) if t not in STOPWORDS]


def groundedness(prediction: str, contexts: Sequence[str]) -> float | None:
    """Share of the prediction's content tokens that appear in the retrieved context.

    Precisely: let P be the list (with repeats) of the prediction's content tokens: its
    normalised words (see `normalise`) after removing `[n]` citation markers and the words in
    `STOPWORDS`. Let C be the set of normalised words of all context passages together. The
    score is |{p in P : p in C}| / |P|, counting repeats in P. It is None (undefined) when there
    is no context or when P is empty (an output with no content makes no claim to check).
    A score of 1.0 means every content word of the answer can be found in the context; it is a
    lexical proxy for support, not a proof of it.
    """
    if not contexts:
        return None
    claimed = content_tokens(prediction)
    if not claimed:
        return None
    available = {t for ctx in contexts for t in tokens(ctx)}
    return sum(t in available for t in claimed) / len(claimed)


def cited_numbers(text: str) -> list[int]:
    """The source numbers cited in `text` with `[n]` or `[n, m]` markers, in order, distinct."""
    found: list[int] = []
    for group in _CITATION.findall(text):
        for part in group.split(","):
            number = int(part)
            if number not in found:
                found.append(number)
    return found


def cited_docs(text: str, sources: Sequence[Mapping[str, object]]) -> tuple[list[str], bool]:
    """The documents an answer cites, and whether it cited any explicitly.

    `sources` are the server's returned sources (`index`, `doc_id`, ...). When the text has
    `[n]` markers, the cited documents are the `doc_id`s of the sources whose `index` is one of
    those numbers (numbers that match no source cite nothing). When it has no markers, the
    cited documents are all returned sources' `doc_id`s: the answer implicitly rests on them.
    """
    numbers = cited_numbers(text)
    by_index = {int(s["index"]): str(s["doc_id"]) for s in sources if "index" in s}
    if numbers:
        docs = [by_index[n] for n in numbers if n in by_index]
        return list(dict.fromkeys(docs)), True
    return list(dict.fromkeys(str(s["doc_id"]) for s in sources)), False


def citation_accuracy(
    prediction: str, sources: Sequence[Mapping[str, object]], gold_docs: Iterable[str]
) -> float | None:
    """1.0 when the documents the answer cites (see `cited_docs`) include a gold document.

    0.0 when they do not, including when every `[n]` marker points at no returned source.
    None (undefined) when the item has no gold document or the server returned no sources.
    """
    gold = set(gold_docs)
    if not gold or not sources:
        return None
    docs, _ = cited_docs(prediction, sources)
    return float(bool(gold.intersection(docs)))


# --- retrieval metrics --------------------------------------------------------------------


def dedup_docs(doc_ids: Iterable[str]) -> list[str]:
    """Distinct document ids in order of first appearance (each at its best chunk's rank)."""
    return list(dict.fromkeys(doc_ids))


def recall_at_k(ranked_docs: Sequence[str], gold: Iterable[str], k: int) -> float:
    """Share of the gold documents among the first k distinct documents."""
    gold_set = set(gold)
    if not gold_set:
        raise ValueError("recall needs at least one gold document")
    top = set(dedup_docs(ranked_docs)[:k])
    return len(gold_set & top) / len(gold_set)


def mrr_at_k(ranked_docs: Sequence[str], gold: Iterable[str], k: int) -> float:
    """1 / rank of the first gold document among the first k distinct documents, else 0."""
    gold_set = set(gold)
    if not gold_set:
        raise ValueError("MRR needs at least one gold document")
    for rank, doc in enumerate(dedup_docs(ranked_docs)[:k], start=1):
        if doc in gold_set:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(ranked_docs: Sequence[str], gold: Iterable[str], k: int) -> float:
    """Binary-relevance nDCG over the first k distinct documents.

    DCG = sum of 1/log2(rank + 1) over the ranks (1-based) that hold a gold document; the ideal
    DCG puts min(|gold|, k) gold documents at ranks 1, 2, ...; nDCG = DCG / ideal DCG.
    """
    gold_set = set(gold)
    if not gold_set:
        raise ValueError("nDCG needs at least one gold document")
    top = dedup_docs(ranked_docs)[:k]
    dcg = sum(1.0 / math.log2(rank + 1) for rank, d in enumerate(top, start=1) if d in gold_set)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(gold_set), k) + 1))
    return dcg / ideal


def answer_in_context(chunk_texts: Sequence[str], references: Sequence[str], k: int) -> float:
    """1.0 when any reference occurs (normalised, whole words) in one of the first k chunks.

    This is chunk-level, not document-level: the first k chunks are the context a server
    retrieving k chunks would give the model.
    """
    return float(any(_contains(text, ref) for text in chunk_texts[:k] for ref in references))


# --- aggregation --------------------------------------------------------------------------


def mean_or_none(values: Iterable[float | None]) -> float | None:
    """The mean of the values that are not None; None when there are none."""
    present = [v for v in values if v is not None]
    return fmean(present) if present else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100, linear interpolation, numpy's default); None when empty."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q))
