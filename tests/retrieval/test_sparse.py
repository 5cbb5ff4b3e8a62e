"""BM25 term-frequency sparse vectors: stable hashing, normalisation, saturation."""

from __future__ import annotations

import subprocess
import sys

from retrieval.sparse import SparseEncoder, token_index, tokenize


def test_tokens_are_normalised() -> None:
    assert tokenize("Qdrant's ＡＰＩ max_tokens 2.5GHz") == [
        "qdrant",
        "s",
        "api",
        "max_tokens",
        "2",
        "5ghz",
    ]


def test_token_index_is_stable_across_processes() -> None:
    here = token_index("quokka")
    there = subprocess.run(
        [
            sys.executable,
            "-c",
            "from retrieval.sparse import token_index; print(token_index('quokka'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert int(there) == here
    assert 0 <= here < 2**32 and token_index("quokka") != token_index("quokkas")


def test_document_values_saturate_and_queries_are_binary() -> None:
    encoder = SparseEncoder()
    vector = encoder.encode_document("ledger ledger ledger ledger pouch")
    weights = dict(zip(vector.indices, vector.values, strict=True))
    assert vector.indices == sorted(vector.indices)
    ledger, pouch = weights[token_index("ledger")], weights[token_index("pouch")]
    assert pouch < ledger < 4 * pouch  # more occurrences weigh more, but not linearly
    assert ledger < encoder.k1 + 1
    query = encoder.encode_query("Ledger ledger POUCH")
    assert sorted(query.indices) == sorted([token_index("ledger"), token_index("pouch")])
    assert query.values == [1.0, 1.0]
