"""`lorag config`: the effective config, and a reference that stays in step with the code."""

from pathlib import Path

import yaml
from typer.testing import CliRunner

from lorag.cli import app
from lorag.commands.config import reference_markdown, reference_rows

ROOT = Path(__file__).resolve().parents[2]


def test_reference_doc_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == reference_markdown(), (
        "docs/configuration.md is stale: run `lorag config reference -o docs/configuration.md`"
    )


def test_reference_lists_every_leaf_setting() -> None:
    keys = {key for key, *_ in reference_rows()}
    assert "retrieval.qdrant.url" in keys
    assert "serving.engine.max_adapters" in keys
    assert not any(key.endswith((".qdrant", ".engine")) for key in keys)


def test_show_prints_yaml_with_overrides_and_hidden_secrets(tmp_path: Path) -> None:
    config = tmp_path / "lorag.yaml"
    config.write_text("retrieval:\n  k: 9\n  qdrant:\n    api_key: s3cr3t-value\n")
    result = CliRunner().invoke(
        app, ["--config", str(config), "config", "show"], env={"LORAG_RETRIEVAL__MODE": "dense"}
    )
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert shown["retrieval"]["k"] == 9
    assert shown["retrieval"]["mode"] == "dense"
    assert "s3cr3t-value" not in result.output


def test_bad_config_is_reported_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "lorag.yaml"
    config.write_text("retrieval:\n  k: -1\n")
    result = CliRunner().invoke(app, ["--config", str(config), "config", "show"])
    assert result.exit_code != 0
    assert "retrieval.k" in str(result.exception) or "retrieval.k" in result.output
