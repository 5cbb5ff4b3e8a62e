"""`lorag train` and `lorag export --merge` through the command line."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from contracts.manifest import AdapterManifest
from lorag.cli import app
from tests.training.conftest import chat_records, write_jsonl
from tests.training.test_raft import DOCS
from training.data import DataError


@pytest.fixture
def cli(tmp_path):
    """The `lorag` app with `--config` naming a config file under `tmp_path`."""
    config = {
        "retrieval": {"qdrant": {"path": str(tmp_path / "qdrant")}},
        "training": {
            "output_root": str(tmp_path / "adapters"),
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
            "learning_rate": 5e-3,
            "batch_size": 2,
            "eval_every": 2,
        },
    }
    config_file = tmp_path / "lorag.yaml"
    config_file.write_text(yaml.safe_dump(config))
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, ["--config", str(config_file), *map(str, args)])

    return invoke


def test_train_then_export_merged(cli, tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", chat_records(12))
    result = cli("train", "--name", "cli-facts", "--data", data, "--base-model", tiny_model,
                 "--max-steps", 3)  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    adapter = tmp_path / "adapters" / "cli-facts"
    manifest = AdapterManifest.load(adapter)
    assert manifest.name == "cli-facts" and manifest.base_model == str(tiny_model)
    assert manifest.metrics["steps"] == 3 and manifest.lora["r"] == 4
    assert "cli-facts" in result.output and "tokens/s" in result.output

    again = cli("train", "--name", "cli-facts", "--data", data, "--base-model", tiny_model)
    assert isinstance(again.exception, FileExistsError)
    resumed = cli("train", "--name", "cli-facts", "--data", data, "--base-model", tiny_model,
                  "--max-steps", 5, "--resume")  # fmt: skip
    assert resumed.exit_code == 0, resumed.output + repr(resumed.exception)
    assert AdapterManifest.load(adapter).metrics["steps"] == 5

    merged = tmp_path / "merged"
    result = cli("export", "--merge", adapter, merged)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert (merged / "model.safetensors").is_file() and (merged / "chat_template.jinja").is_file()
    assert cli("export", adapter, tmp_path / "other").exit_code == 2  # --merge is required


def test_bad_data_and_options_are_reported(cli, tiny_model, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [*chat_records(2), {"prompt": "no completion"}])
    result = cli("train", "--name", "bad", "--data", bad, "--base-model", tiny_model)
    assert isinstance(result.exception, DataError)
    assert f"{bad}:3: completion: Field required" in str(result.exception)
    assert not (tmp_path / "adapters" / "bad").exists()
    result = cli("train", "--name", "x", "--qa", bad, "--base-model", tiny_model)
    assert result.exit_code == 2 and "--domain" in result.output
    result = cli("train", "--name", "x", "--base-model", tiny_model)
    assert result.exit_code == 2 and "--data" in result.output
    result = cli("train", "--name", "../x", "--data", bad, "--base-model", tiny_model)
    assert result.exit_code == 2


def test_train_from_qa_pairs_and_a_domain_index(cli, tiny_model, tmp_path):
    from retrieval import Retriever
    from retrieval.settings import RetrievalSettings

    root = tmp_path / "docs"
    root.mkdir()
    for doc, texts in DOCS.items():
        (root / doc).write_text(f"# {doc.removesuffix('.md').title()}\n\n" + "\n\n".join(texts))
    with Retriever(RetrievalSettings(qdrant={"path": str(tmp_path / "qdrant")})) as retriever:
        retriever.index("shop", root)
    qa = write_jsonl(tmp_path / "qa.jsonl", [
        {"question": "How long is the warranty?", "answer": "two years", "gold_doc": "warranty.md"},
        {"question": "How long does shipping take?", "answer": "three days"},
        {"question": "What does the adapter cost?", "answer": "ten euro"},
    ])  # fmt: skip
    result = cli("train", "--name", "rag", "--qa", qa, "--domain", "shop",
                 "--base-model", tiny_model, "--max-steps", 2)  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    adapter = tmp_path / "adapters" / "rag"
    manifest = AdapterManifest.load(adapter)
    assert manifest.domain == "shop" and manifest.data[0].records == 3
    samples = [
        json.loads(line) for line in (adapter / "raft-samples.jsonl").read_text().splitlines()
    ]
    assert len(samples) == 3
    assert all("Context:\n[1] " in s["messages"][-2]["content"] for s in samples)
