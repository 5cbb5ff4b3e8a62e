"""Sliding-window perplexity on a tiny model: base vs random adapters, real PEFT."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from contracts.manifest import AdapterCompatibilityError, AdapterManifest
from eval.perplexity import (
    build_report,
    collect_text_files,
    evaluate_perplexity,
    sliding_window_nll,
)
from eval.report import write_report
from lorag.cli import app
from tests.eval.conftest import DOMAIN_TEXT
from tests.eval.reportcheck import check_written


@pytest.fixture
def held_out(tmp_path: Path) -> list[Path]:
    docs = tmp_path / "held-out"
    docs.mkdir()
    (docs / "policy.md").write_text("# Policy\n\n" + " ".join(DOMAIN_TEXT * 6))
    (docs / "notes.txt").write_text("Support answers a ticket within two hours. " * 10)
    (docs / "ignored.json").write_text("{}")
    return collect_text_files([docs])


def hf_recipe_nll(model, ids: list[int], max_length: int, stride: int) -> float:
    """The sliding-window recipe of the transformers perplexity guide (labels masked -100)."""
    total, prev_end = 0.0, 0
    with torch.no_grad():
        for begin in range(0, len(ids), stride):
            end = min(begin + max_length, len(ids))
            window = torch.tensor([ids[begin:end]])
            labels = window.clone()
            labels[:, : -(end - prev_end)] = -100
            valid = int((labels[:, 1:] != -100).sum())
            total += float(model(window, labels=labels).loss) * valid
            prev_end = end
            if end == len(ids):
                break
    return total


def test_sliding_window_matches_a_full_forward_pass(tiny_model: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    ids = tokenizer(" ".join(DOMAIN_TEXT * 3))["input_ids"]
    n = len(ids)
    with torch.no_grad():
        reference = float(model(torch.tensor([ids]), labels=torch.tensor([ids])).loss) * (n - 1)
    whole = sliding_window_nll(model, ids, max_length=n + 5, stride=n)
    assert whole.tokens == n - 1
    assert whole.nll == pytest.approx(reference, rel=1e-4)
    # Smaller windows: every token scored once, as the transformers docs' recipe scores it.
    for max_length, stride in [(16, 8), (16, 15), (24, 6)]:
        score = sliding_window_nll(model, ids, max_length=max_length, stride=stride)
        assert score.tokens == n - 1
        expected = hf_recipe_nll(model, ids, max_length, stride)
        assert score.nll == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ValueError, match="stride"):
        sliding_window_nll(model, ids, max_length=8, stride=8)


def test_base_vs_adapters(
    tiny_model: Path, tiny_adapters: list[Path], held_out: list[Path], tmp_path: Path
) -> None:
    assert [p.name for p in held_out] == ["notes.txt", "policy.md"]
    results = evaluate_perplexity(tiny_model, tiny_adapters, held_out, max_length=32, stride=16)
    assert [r.model for r in results] == ["base", "shop-v1", "shop-v2"]
    values = [r.overall.perplexity for r in results]
    assert all(math.isfinite(v) and v > 1.0 for v in values)
    assert len({round(v, 4) for v in values}) == 3, values  # each adapter changes the model
    assert {r.overall.tokens for r in results} == {results[0].overall.tokens}
    written = write_report(build_report(results, {"max_length": 32, "stride": 16}), tmp_path)
    payload = check_written(written, {"perplexity.png"}, ["model"])
    assert payload["summary"]["base"]["perplexity"] == pytest.approx(values[0])
    assert len(payload["results"]) == 3 * 2


def test_adapter_for_another_base_is_refused(
    tiny_model: Path, tiny_adapters: list[Path], held_out: list[Path], tmp_path: Path
) -> None:
    foreign = shutil.copytree(tiny_adapters[0], tmp_path / "foreign")
    manifest = AdapterManifest.load(foreign)
    manifest.base_fingerprint = "0" * 64
    manifest.save(foreign)
    with pytest.raises(AdapterCompatibilityError, match="retrain it"):
        evaluate_perplexity(tiny_model, [foreign], held_out, max_length=32, stride=16)
    with pytest.raises(FileNotFoundError, match="not a PEFT adapter"):
        evaluate_perplexity(tiny_model, [tmp_path], held_out, max_length=32, stride=16)


def test_cli_perplexity(
    tiny_model: Path, tiny_adapters: list[Path], held_out: list[Path], tmp_path: Path
) -> None:
    args = ["eval", "perplexity", "--base", str(tiny_model), "--adapter", str(tiny_adapters[0]),
            "--max-length", "32", "--stride", "16", "--out", str(tmp_path / "reports"), "--json",
            *map(str, held_out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    output = json.loads(result.stdout)
    assert set(output["summary"]) == {"base", "shop-v1"}
    assert Path(output["files"]["report"]).is_file()
    assert Path(output["files"]["plots"][0]).name == "perplexity.png"
