"""Retrieval-aware samples: gold + distractors rendered by the shared prompt module."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from retrieval.prompt import build_messages
from tests.training.conftest import write_jsonl
from training.data import DataError
from training.raft import QAPair, RaftStats, build_raft_examples, load_qa_file
from training.settings import RaftSettings


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    source: str
    heading: str
    chunk_index: int
    text: str
    score: float = 0.0


DOCS = {
    "refunds.md": [
        "Refunds are accepted within fourteen days.",
        "Refunds go to the original card.",
    ],
    "warranty.md": ["The warranty lasts two years.", "The warranty excludes water damage."],
    "shipping.md": ["Shipping takes three days.", "Shipping is free above fifty euro."],
    "support.md": ["Support is open nine to five.", "Support answers by email."],
    "pricing.md": ["The adapter costs ten euro.", "Prices include tax."],
}


class FakeIndex:
    """Word-overlap search over `DOCS`: a stand-in with `retrieval.Retriever`'s search API."""

    def __init__(self) -> None:
        self.chunks = [
            Chunk(doc, doc, doc.removesuffix(".md").title(), i, text)
            for doc, texts in DOCS.items()
            for i, text in enumerate(texts)
        ]

    def search(self, domain, query, *, k=5, doc_id=None, mode=None):
        assert domain == "shop"
        words = set(re.findall(r"\w+", query.lower()))
        pool = [c for c in self.chunks if doc_id is None or c.doc_id == doc_id]
        ranked = sorted(pool, key=lambda c: -len(words & set(re.findall(r"\w+", c.text.lower()))))
        return ranked[:k]

    def document_chunks(self, domain, doc_id):
        return [c for c in self.chunks if c.doc_id == doc_id]


def _chunks_in(user_text: str, chunks) -> list:
    """The chunks whose rendered block appears in a user turn, in order of appearance."""
    found = []
    for chunk in chunks:
        at = user_text.find(f"] {chunk.source} > {chunk.heading}\n{chunk.text}")
        if at >= 0:
            found.append((at, chunk))
    return [chunk for _, chunk in sorted(found, key=lambda pair: pair[0])]


def _passages_of(user_text: str) -> list[str]:
    return re.findall(r"^\[\d+\] (\S+)", user_text, flags=re.MULTILINE)


def test_samples_hold_gold_and_distractors_exactly_as_the_server_renders_them():
    pairs = [("qa.jsonl:1", QAPair(question="How long do refunds take?", answer="fourteen days",
                                   gold_doc="refunds.md"))]  # fmt: skip
    settings = RaftSettings(
        order="shuffled", distractors=2, distractor_only_fraction=0.0, system_prompt="Be brief."
    )
    [example], stats = build_raft_examples(pairs, FakeIndex(), "shop", settings)
    assert stats.gold_from_ids == 1 and stats.distractor_only == 0
    *prompt, answer = example.messages
    sources = _passages_of(prompt[-1]["content"])
    assert len(sources) == 3 and sources.count("refunds.md") == 1
    # The very call the server makes, with the passages in the sample's order.
    passages = _chunks_in(prompt[-1]["content"], FakeIndex().chunks)
    assert len(passages) == 3 and passages[sources.index("refunds.md")].chunk_index == 0
    assert prompt == build_messages(
        [{"role": "user", "content": "How long do refunds take?"}], passages, "Be brief."
    )
    assert prompt[0] == {"role": "system", "content": "Be brief."}
    assert answer == {
        "role": "assistant",
        "content": f"fourteen days [{sources.index('refunds.md') + 1}]",
    }
    assert example.origin == "qa.jsonl:1"


def _shuffled(pair: QAPair, distractors: int) -> tuple[list, RaftStats]:
    """One pair's sample in RAFT's own layout, every sample with its gold passage."""
    settings = RaftSettings(order="shuffled", distractors=distractors, distractor_only_fraction=0)
    return build_raft_examples([("f:1", pair)], FakeIndex(), "shop", settings)


def test_the_gold_chunk_is_the_one_with_the_answer_and_distractors_come_from_other_docs():
    pair = QAPair(question="What does the warranty exclude?", answer="water damage",
                  gold_docs=["warranty.md"])  # fmt: skip
    [example], _ = _shuffled(pair, distractors=3)
    user = example.messages[-2]["content"]
    assert "The warranty excludes water damage." in user
    assert "The warranty lasts two years." not in user
    assert _passages_of(user).count("warranty.md") == 1 and len(_passages_of(user)) == 4


def test_without_gold_ids_the_best_hit_containing_the_answer_is_gold():
    pair = QAPair(question="Is shipping free?", answer="above fifty euro",
                  aliases=["free above fifty euro"])  # fmt: skip
    [example], stats = _shuffled(pair, distractors=2)
    user = example.messages[-2]["content"]
    assert stats.gold_by_answer == 1
    assert "Shipping is free above fifty euro." in user
    assert user.count("fifty euro") == 1  # no distractor holds the answer
    unknown = QAPair(question="Who founded the shop?", answer="Ada")
    _, stats = build_raft_examples([("f:2", unknown)], FakeIndex(), "shop")
    assert stats.gold_assumed_top_hit == 1 and "f:2" in stats.warnings[0]


def test_distractor_only_fraction_order_and_seed_are_deterministic():
    pairs = [
        (f"f:{i}", QAPair(question=f"question {i} about refunds", answer="fourteen days",
                          gold_doc="refunds.md"))
        for i in range(40)
    ]  # fmt: skip
    settings = RaftSettings(order="shuffled", distractors=2, distractor_only_fraction=0.25, seed=3)
    first, stats = build_raft_examples(pairs, FakeIndex(), "shop", settings)
    again, _ = build_raft_examples(pairs, FakeIndex(), "shop", settings)
    assert [e.messages for e in first] == [e.messages for e in again]
    assert 4 <= stats.distractor_only <= 18
    without = [e for e in first if "refunds.md" not in _passages_of(e.messages[-2]["content"])]
    assert len(without) == stats.distractor_only
    for example in without:  # same passage count, no citation
        assert len(_passages_of(example.messages[-2]["content"])) == 3
        assert example.messages[-1]["content"] == "fourteen days"
    positions = {_passages_of(e.messages[-2]["content"]).index("refunds.md") for e in first
                 if e not in without}  # fmt: skip
    assert len(positions) > 1  # the gold passage moves around
    other_seed, _ = build_raft_examples(
        pairs, FakeIndex(), "shop", settings.model_copy(update={"seed": 4})
    )
    assert [e.messages for e in other_seed] != [e.messages for e in first]
    # k (the server's passage count) sets the distractors when they are not given.
    [five], _ = build_raft_examples(pairs[:1], FakeIndex(), "shop",
                                    RaftSettings(order="shuffled", distractor_only_fraction=0), k=5)  # fmt: skip
    assert len(_passages_of(five.messages[-2]["content"])) == 5


def test_retrieved_order_is_the_servers_top_k_with_the_gold_chunk_put_in_when_missed():
    index = FakeIndex()
    settings = RaftSettings(distractor_only_fraction=0, system_prompt="Be brief.")
    assert settings.order == "retrieved"
    # Retrieval finds the gold chunk: the prompt is exactly the server's top 3, in rank order.
    found = QAPair(question="Is shipping free above fifty euro?", answer="above fifty euro",
                   gold_doc="shipping.md")  # fmt: skip
    [example], _ = build_raft_examples([("f:1", found)], index, "shop", settings, k=3)
    served = index.search("shop", found.question, k=3)
    assert example.messages[:-1] == build_messages(
        [{"role": "user", "content": found.question}], served, "Be brief."
    )
    gold_rank = [c.text for c in served].index("Shipping is free above fifty euro.") + 1
    assert example.messages[-1]["content"] == f"above fifty euro [{gold_rank}]"
    # Retrieval misses it: the gold chunk replaces the lowest-ranked hit, the others keep order.
    missed = QAPair(question="What is free above fifty euro?", answer="Water damage",
                    gold_docs=["warranty.md"])  # fmt: skip
    top = index.search("shop", missed.question, k=3)
    assert all(c.text != "The warranty excludes water damage." for c in top)
    [example], _ = build_raft_examples([("f:2", missed)], index, "shop", settings, k=3)
    shown = _chunks_in(example.messages[-2]["content"], index.chunks)
    assert [c.text for c in shown if c.doc_id != "warranty.md"] == [c.text for c in top[:2]]
    assert len(shown) == 3 and sum(c.doc_id == "warranty.md" for c in shown) == 1
    at = next(n for n, c in enumerate(shown, start=1) if c.doc_id == "warranty.md")
    assert example.messages[-1]["content"] == f"Water damage [{at}]"


def test_samples_per_pair_draw_independently_and_misses_hold_no_answer():
    pairs = [(f"f:{i}", QAPair(question=f"question {i}: how long do refunds take?",
                               answer="fourteen days", gold_doc="refunds.md"))
             for i in range(30)]  # fmt: skip
    settings = RaftSettings(samples_per_pair=3, distractor_only_fraction=0.3, seed=1)
    examples, stats = build_raft_examples(pairs, FakeIndex(), "shop", settings, k=3)
    assert len(examples) == 90 and [e.origin for e in examples[:3]] == ["f:0"] * 3
    misses = [e for e in examples if "fourteen days" not in e.messages[-2]["content"]]
    assert len(misses) == stats.distractor_only and 9 <= len(misses) <= 45
    for example in misses:  # a retrieval miss: three passages, none with the answer, no citation
        assert len(_passages_of(example.messages[-2]["content"])) == 3
        assert example.messages[-1]["content"] == "fourteen days"
    for example in examples:
        if example not in misses:
            assert re.fullmatch(r"fourteen days \[\d\]", example.messages[-1]["content"])


def test_qa_files_are_validated_and_unknown_gold_docs_refused(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [
        {"question": "How long do refunds take?", "answer": "fourteen days", "gold_doc": "nope.md"},
    ])  # fmt: skip
    pairs, info, _ = load_qa_file(path)
    assert info.records == 1
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}:1: gold_doc 'nope.md'"):
        build_raft_examples(pairs, FakeIndex(), "shop")
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "answer": "a"}, {"question": "q"}])
    with pytest.raises(DataError, match=rf"{re.escape(str(bad))}:2: answer: Field required"):
        load_qa_file(bad)


def test_raft_on_the_real_retriever(tmp_path):
    """Real Qdrant local mode and the real MiniLM embedding model."""
    from retrieval import Retriever
    from retrieval.settings import RetrievalSettings

    root = tmp_path / "docs"
    root.mkdir()
    for doc, texts in DOCS.items():
        (root / doc).write_text(f"# {doc.removesuffix('.md').title()}\n\n" + "\n\n".join(texts))
    (root / "faq").mkdir()
    (root / "faq" / "returns.md").write_text("# Returns\n\nReturned items must be unused.\n")
    settings = RetrievalSettings(qdrant={"path": str(tmp_path / "qdrant")})
    qa = write_jsonl(tmp_path / "qa.jsonl", [
        {"question": "How long is the warranty?", "answer": "two years", "gold_doc": "warranty.md"},
        {"question": "What condition must returned items be in?", "answer": "unused",
         "gold_docs": ["faq/returns.md"]},
        {"question": "How long does shipping take?", "answer": "three days"},
    ])  # fmt: skip
    pairs, _, _ = load_qa_file(qa)
    with Retriever(settings) as retriever:
        retriever.index("shop", root)
        examples, stats = build_raft_examples(
            pairs,
            retriever,
            "shop",
            RaftSettings(order="shuffled", distractors=2, distractor_only_fraction=0),
        )
        hits = retriever.search("shop", "How long is the warranty?", k=10)
    assert stats.gold_from_ids == 2 and stats.gold_by_answer == 1
    for example, gold_source, fact in zip(
        examples,
        ["warranty.md", "faq/returns.md", "shipping.md"],
        ["two years", "unused", "three days"],
    ):
        *prompt, answer = example.messages
        sources = _passages_of(prompt[-1]["content"])
        assert len(sources) == 3 and sources.count(gold_source) == 1
        assert fact in prompt[-1]["content"]
        assert answer["content"] == f"{fact} [{sources.index(gold_source) + 1}]"
    # The first sample equals build_messages over the real hits in the sample's order.
    passages = _chunks_in(examples[0].messages[-2]["content"], hits)
    assert len(passages) == 3
    assert examples[0].messages[:-1] == build_messages(
        [{"role": "user", "content": "How long is the warranty?"}], passages
    )
    assert all(Path(p.source).suffix == ".md" for p in passages)


def test_extra_draws_reorder_the_served_passages_and_cite_where_the_answer_went():
    pairs = [(f"f:{i}", QAPair(question=f"question {i}: how long do refunds take?",
                               answer="fourteen days", gold_doc="refunds.md"))
             for i in range(20)]  # fmt: skip
    index = FakeIndex()
    settings = RaftSettings(samples_per_pair=2, distractor_only_fraction=0.0)
    examples, _ = build_raft_examples(pairs, index, "shop", settings, k=3)
    reordered = 0
    for served, extra in zip(examples[::2], examples[1::2]):
        first = _chunks_in(served.messages[-2]["content"], index.chunks)
        second = _chunks_in(extra.messages[-2]["content"], index.chunks)
        assert sorted(map(id, first)) == sorted(map(id, second))  # the same passages
        reordered += first != second
        at = next(n for n, c in enumerate(second, start=1) if "fourteen days" in c.text)
        assert extra.messages[-1]["content"] == f"fourteen days [{at}]"
    assert reordered >= 10  # 5 of 6 orders differ from the served one

    cite_first = RaftSettings(cite_first=True, distractor_only_fraction=0.0)
    [example], _ = build_raft_examples(pairs[:1], index, "shop", cite_first, k=3)
    assert re.fullmatch(r"\[\d\] fourteen days", example.messages[-1]["content"])
