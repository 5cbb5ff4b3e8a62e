"""Retrieval eval on a small real index: real Qdrant local mode, real embedding model."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eval.dataset import load_eval_set
from eval.report import write_report
from eval.retrieval_eval import MODES, build_report, evaluate_retrieval
from lorag.cli import app
from tests.eval.reportcheck import check_written

DOCS = {
    "guides/refunds.md": "# Refunds\n\nCustomers may return any product within thirty days of "
    "delivery for a full refund. Refunds are paid back to the original card.\n",
    "guides/shipping.md": "# Shipping\n\nParcels ship from the Rotterdam warehouse. Standard "
    "shipping takes five working days; express delivery arrives the next day.\n",
    "reference/warranty.md": "# Warranty\n\nEvery espresso machine carries a two year warranty "
    "covering the pump and the boiler.\n",
    "reference/support.md": "# Support\n\nThe support desk answers tickets within four hours, "
    "Monday to Friday, by email at help@example.com.\n",
}

QUESTIONS = [
    {"question": "How many days do customers have to return a product for a refund?",
     "answer": "thirty days", "gold_doc": "guides/refunds.md"},
    {"question": "How long does standard shipping take?", "answer": "five working days",
     "gold_doc": "guides/shipping.md"},
    {"question": "How long is the espresso machine warranty?", "answer": "two year",
     "aliases": ["2 years"], "gold_docs": ["reference/warranty.md"]},
    {"question": "How quickly does the support desk answer tickets?", "answer": "four hours",
     "gold_doc": "reference/support.md"},
    # A gold document that is not in the index: recall must be 0 for this one.
    {"question": "What colour is the company logo?", "answer": "teal",
     "gold_doc": "brand/logo.md"},
    # No gold document: only answer-in-context is scored.
    {"question": "Where do parcels ship from?", "answer": "Rotterdam"},
]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from retrieval import Retriever
    from retrieval.settings import RetrievalSettings

    root = tmp_path_factory.mktemp("retrieval-eval")
    docs = root / "docs"
    for name, text in DOCS.items():
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        (docs / name).write_text(text)
    evalset = root / "set.jsonl"
    evalset.write_text("\n".join(json.dumps(q) for q in QUESTIONS) + "\n")
    config = root / "lorag.yaml"
    config.write_text(f"retrieval:\n  qdrant:\n    path: {root / 'qdrant'}\n")
    settings = RetrievalSettings.model_validate({"qdrant": {"path": str(root / "qdrant")}})
    with Retriever(settings) as retriever:
        retriever.index("shop", docs)
    return {"root": root, "settings": settings, "evalset": evalset, "config": config}


def test_retrieval_eval_on_a_real_index(indexed: dict, tmp_path: Path) -> None:
    from retrieval import Retriever

    items = load_eval_set(indexed["evalset"])
    with Retriever(indexed["settings"]) as retriever:  # local mode: one client per path
        runs = evaluate_retrieval(retriever, "shop", items, MODES, [1, 5, 10], 10)
    assert [r.mode for r in runs] == list(MODES)
    for run in runs:
        assert len(run.per_item) == len(items)
        missing = run.per_item[4]
        assert missing["recall@10"] == 0.0 and missing["mrr@10"] == 0.0
        assert "recall@1" not in run.per_item[5]  # no gold document, no retrieval metric
        assert run.per_item[5]["answer_in_context@10"] == 1.0
        # Doc-level dedup: no document appears twice in a ranking.
        for row in run.per_item:
            assert len(row["retrieved_docs"]) == len(set(row["retrieved_docs"])) <= len(DOCS)
        s = run.summary
        assert s["recall@1"] <= s["recall@5"] <= s["recall@10"] == pytest.approx(4 / 5)
        assert 0.0 <= s["ndcg@10"] <= s["recall@10"]
    dense = runs[0].summary
    # Four unmistakable questions: the embedding model puts each gold doc first.
    assert dense["recall@1"] == pytest.approx(4 / 5)
    assert dense["mrr@10"] == pytest.approx(4 / 5)
    assert dense["ndcg@10"] == pytest.approx(4 / 5)
    assert dense["answer_in_context@1"] == pytest.approx(5 / 6)

    report = build_report(runs, "shop", "set.jsonl", items, [1, 5, 10], 10)
    written = write_report(report, tmp_path)
    payload = check_written(written, {"retrieval_by_k.png", "modes.png"}, ["mode"])
    assert set(payload["summary"]["modes"]) == set(MODES)
    assert len(payload["results"]) == len(MODES) * len(items)
    for mode in MODES:
        assert f"| {mode} |" in written.markdown.read_text()


def test_cli_retrieval_json(indexed: dict, tmp_path: Path) -> None:
    args = ["--config", str(indexed["config"]), "eval", "retrieval", "shop",
            str(indexed["evalset"]), "--mode", "dense", "--mode", "sparse",
            "--out", str(tmp_path), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    output = json.loads(result.stdout)
    assert set(output["summary"]["modes"]) == {"dense", "sparse"}
    assert output["summary"]["modes"]["dense"]["recall@1"] == pytest.approx(4 / 5)
    assert Path(output["files"]["report"]).read_text().count("| dense |") == 1
