"""Heading-aware chunking with the embedding model's tokenizer: bounds, overlap, coverage."""

from __future__ import annotations

import itertools
import re

import pytest

from retrieval.chunking import Chunker
from retrieval.embedding import Embedder
from retrieval.loaders import Document, Section


def _tokens(embedder: Embedder, text: str) -> int:
    return len(embedder.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def _document(*sections: Section) -> Document:
    return Document("doc.md", "markdown", "h", list(sections))


def _long_text(paragraphs: int, sentences: int) -> str:
    return "\n\n".join(
        " ".join(f"Paragraph {p} sentence {s} mentions item{p}x{s} once." for s in range(sentences))
        for p in range(paragraphs)
    )


def test_short_sections_are_single_chunks_with_their_heading(embedder: Embedder) -> None:
    chunker = Chunker(embedder.tokenizer, max_tokens=64, overlap_tokens=8)
    chunks = chunker.chunk(
        _document(Section(("Guide",), "Intro text."), Section(("Guide", "Setup"), "Run it."))
    )
    assert [(c.chunk_index, c.heading, c.text) for c in chunks] == [
        (0, "Guide", "Intro text."),
        (1, "Guide > Setup", "Run it."),
    ]
    assert chunks[1].embed_text == "Guide > Setup\nRun it."


@pytest.mark.parametrize(("max_tokens", "overlap"), [(48, 8), (100, 20), (64, 0)])
def test_long_sections_respect_the_budget_overlap_and_cover_everything(
    embedder: Embedder, max_tokens: int, overlap: int
) -> None:
    text = _long_text(paragraphs=6, sentences=5)
    chunker = Chunker(embedder.tokenizer, max_tokens=max_tokens, overlap_tokens=overlap)
    chunks = chunker.chunk(_document(Section(("Long", "Part"), text), Section(("Other",), "End.")))
    long_chunks = [c for c in chunks if c.heading == "Long > Part"]
    assert len(long_chunks) > 2
    assert chunks[-1].heading == "Other" and chunks[-1].text == "End."  # no straddling
    for chunk in chunks:
        assert _tokens(embedder, chunk.embed_text) <= max_tokens
    # Every marker of the section is in some chunk, in order.
    markers = re.findall(r"item\d+x\d+", text)
    seen = [m for c in long_chunks for m in re.findall(r"item\d+x\d+", c.text)]
    assert sorted(set(seen)) == sorted(markers)
    for before, after in itertools.pairwise(long_chunks):
        # The next chunk starts with the previous one's last `overlap` tokens.
        shared = max(
            (n for n in range(1, len(after.text) + 1) if before.text.endswith(after.text[:n])),
            default=0,
        )
        if overlap:
            assert shared > 0
            assert abs(_tokens(embedder, after.text[:shared]) - overlap) <= 1
        else:
            assert shared == 0


def test_cuts_prefer_paragraph_breaks(embedder: Embedder) -> None:
    paragraph = "This sentence has eight words in it. " * 3
    text = "\n\n".join([paragraph.strip()] * 6)
    chunker = Chunker(embedder.tokenizer, max_tokens=64, overlap_tokens=0)
    chunks = chunker.chunk(_document(Section((), text)))
    assert len(chunks) >= 3
    for chunk in chunks:
        assert chunk.text.startswith("This sentence") and chunk.text.endswith("in it.")


def test_overlap_must_be_smaller_than_the_budget(embedder: Embedder) -> None:
    with pytest.raises(ValueError, match="overlap_tokens"):
        Chunker(embedder.tokenizer, max_tokens=32, overlap_tokens=32)
