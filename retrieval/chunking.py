"""Heading-aware chunking bounded in tokens of the embedding model's tokenizer.

Each section of a document (the text under one heading path) is split on its own, so a chunk
never straddles two headings. A section that fits the budget is one chunk; a longer one is cut
into windows of at most `max_tokens` tokens, each cut moved back to a paragraph, line or
sentence break in the window's second half where there is one, and each window starting
`overlap_tokens` tokens before the previous one ended. The text that gets embedded is the
heading path followed by the chunk text, and the heading's tokens count against the budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from retrieval.loaders import Document

_SENTENCE_END = (".", "!", "?", ":", ";")


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    chunk_index: int
    heading: str
    text: str
    tokens: int

    @property
    def embed_text(self) -> str:
        """The text the dense and sparse vectors are computed from."""
        return f"{self.heading}\n{self.text}" if self.heading else self.text


class Chunker:
    """Splits documents into chunks; `tokenizer` is a Hugging Face fast tokenizer."""

    def __init__(self, tokenizer: Any, max_tokens: int, overlap_tokens: int) -> None:
        if overlap_tokens >= max_tokens:
            raise ValueError("overlap_tokens must be smaller than max_tokens")
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens

    def _encode(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        if not texts:
            return []
        encoded = self.tokenizer(
            texts,
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            return_token_type_ids=False,
            truncation=False,
            verbose=False,
        )
        return [list(map(tuple, offsets)) for offsets in encoded["offset_mapping"]]

    def chunk(self, document: Document) -> list[Chunk]:
        """All chunks of a document, numbered from 0 in reading order."""
        sections = document.sections
        headings = [section.heading for section in sections]
        unique_headings = sorted(set(headings))
        heading_tokens = dict(
            zip(unique_headings, (len(o) for o in self._encode(unique_headings)), strict=True)
        )
        offsets_per_section = self._encode([section.text for section in sections])
        chunks: list[Chunk] = []
        for section, offsets in zip(sections, offsets_per_section, strict=True):
            budget = self.max_tokens - heading_tokens[section.heading]
            budget = max(budget, self.max_tokens // 2)
            overlap = min(self.overlap_tokens, budget // 2)
            for text, tokens in _windows(section.text, offsets, budget, overlap):
                chunks.append(Chunk(document.doc_id, len(chunks), section.heading, text, tokens))
        return chunks


def _break_score(text: str, offsets: list[tuple[int, int]], k: int) -> int:
    """How good a cut before token `k` is: 3 paragraph, 2 line, 1 sentence end, 0 none."""
    gap = text[offsets[k - 1][1] : offsets[k][0]]
    if "\n\n" in gap:
        return 3
    if "\n" in gap:
        return 2
    if gap and text[offsets[k - 1][0] : offsets[k - 1][1]].endswith(_SENTENCE_END):
        return 1
    return 0


def _windows(
    text: str, offsets: list[tuple[int, int]], budget: int, overlap: int
) -> list[tuple[str, int]]:
    """Cut one section's text into (chunk text, token count) windows."""
    n = len(offsets)
    if n == 0:
        return []
    if n <= budget:
        return [(text.strip(), n)]
    windows: list[tuple[str, int]] = []
    start = 0
    while start < n:
        end = min(start + budget, n)
        if end < n:
            best, best_score = end, 0
            for k in range(end, start + budget // 2, -1):
                score = _break_score(text, offsets, k)
                if score > best_score:
                    best, best_score = k, score
                    if score == 3:
                        break
            end = best
        chunk_text = text[offsets[start][0] : offsets[end - 1][1]].strip()
        if chunk_text:
            windows.append((chunk_text, end - start))
        if end >= n:
            break
        start = max(end - overlap, start + 1)
    return windows
