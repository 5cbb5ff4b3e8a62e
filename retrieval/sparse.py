"""BM25-style sparse vectors: the term-frequency half of BM25, computed here; Qdrant adds IDF.

Tokens are the NFKC-normalised, case-folded word runs of a text (`\\w+`, so numbers and
identifiers like `max_tokens` stay whole). Each token maps to a 32-bit index by a stable hash
(the first 4 bytes of its BLAKE2b digest; Python's `hash` changes between processes). A
document's value for a token is BM25's saturated term frequency
`tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avg_len))`; a query's value is 1 per distinct
token. The collection's sparse vector uses `Modifier.IDF`, so Qdrant multiplies the query
side by each token's inverse document frequency and the dot product is the BM25 score.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

from retrieval.store import SparseVec

_WORD = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    """Normalised word tokens of `text`."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def token_index(token: str) -> int:
    """A stable 32-bit index for a token."""
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=4).digest(), "little")


@dataclass(frozen=True)
class SparseEncoder:
    """Turns texts into BM25 term-frequency sparse vectors; `scheme` is recorded per index."""

    k1: float = 1.2
    b: float = 0.75
    avg_len: float = 120.0

    @property
    def scheme(self) -> str:
        return f"bm25-tf/blake2b32/k1={self.k1}/b={self.b}/avg_len={self.avg_len}"

    def _vector(self, weights: dict[int, float]) -> SparseVec:
        indices = sorted(weights)
        return SparseVec(indices=indices, values=[weights[i] for i in indices])

    def encode_document(self, text: str) -> SparseVec:
        tokens = tokenize(text)
        counts: Counter[int] = Counter(token_index(token) for token in tokens)
        norm = self.k1 * (1 - self.b + self.b * len(tokens) / self.avg_len)
        return self._vector(
            {index: tf * (self.k1 + 1) / (tf + norm) for index, tf in counts.items()}
        )

    def encode_query(self, text: str) -> SparseVec:
        return self._vector({token_index(token): 1.0 for token in tokenize(text)})
