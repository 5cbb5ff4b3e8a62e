"""`lorag index`, `lorag search`, `lorag domains` end to end: real model, real local Qdrant."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lorag.cli import app
from tests.retrieval.corpus import QUERIES, write_files

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LORAG_CONFIG", raising=False)
    monkeypatch.setenv("LORAG_RETRIEVAL__QDRANT__PATH", str(tmp_path / "qdrant"))
    return CliRunner()


def test_index_search_and_domains(runner: CliRunner, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write_files(docs)
    (docs / "notes.docx").write_bytes(b"PK\x03\x04")

    result = runner.invoke(app, ["index", "quokka", str(docs)])
    assert result.exit_code == 0, result.output
    assert "added" in result.stdout and "unsupported file type .docx" in result.stdout
    assert "notes.docx" in result.stdout

    result = runner.invoke(
        app, ["search", "quokka", QUERIES["reference/api.html"], "-k", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert len(hits) == 2
    assert hits[0]["doc_id"] == "reference/api.html"
    assert set(hits[0]) >= {"doc_id", "source", "heading", "score", "text"}
    assert "600 requests per minute" in hits[0]["text"]

    for mode in ("dense", "sparse"):
        result = runner.invoke(
            app, ["search", "quokka", QUERIES["glossary.txt"], "--mode", mode, "--json"]
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)[0]["doc_id"] == "glossary.txt"

    result = runner.invoke(app, ["search", "quokka", QUERIES["glossary.txt"], "-k", "1"])
    assert result.exit_code == 0 and "glossary.txt" in result.stdout

    result = runner.invoke(app, ["domains", "--json"])
    assert result.exit_code == 0, result.output
    (domain,) = json.loads(result.stdout)
    assert domain["name"] == "quokka" and domain["documents"] == len(QUERIES)
    assert runner.invoke(app, ["domains"]).stdout.count("quokka") >= 1

    # Re-index after a change: the summary counts it.
    (docs / "glossary.txt").unlink()
    result = runner.invoke(app, ["index", "quokka", str(docs), "--rebuild"])
    assert result.exit_code == 0, result.output
    assert "rebuilt" in result.stdout


def test_errors_reach_the_user(runner: CliRunner, tmp_path: Path) -> None:
    from retrieval import DomainNotFoundError

    result = runner.invoke(app, ["search", "nope", "anything"])
    assert isinstance(result.exception, DomainNotFoundError)
    assert "lorag index nope PATH" in str(result.exception)
    result = runner.invoke(app, ["search", "nope", "anything", "--mode", "fuzzy"])
    assert result.exit_code == 2 and "hybrid, dense or sparse" in result.output
    result = runner.invoke(app, ["index", "quokka", str(tmp_path / "missing")])
    assert isinstance(result.exception, FileNotFoundError)
    result = runner.invoke(app, ["domains"])
    assert result.exit_code == 0 and "no domains indexed yet" in result.stdout
