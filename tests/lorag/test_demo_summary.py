"""The demo's summary without running the demo: pooling, the verdict, the files it writes."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

from lorag.demo.results import DemoResult, DomainEval, StageTiming
from lorag.demo.summary import pooled, results_table, verdict, write_summary


def _summary(base: float, adapter: float, questions: int = 10) -> dict:
    row = {"questions": questions, "errors": 0, "answered": questions, "exact_match": 0.0,
           "token_f1": 0.5, "latency_p50_s": 1.0}  # fmt: skip
    return {
        "base+rag+3shot": {**row, "contained": base},
        "adapter+rag": {**row, "contained": adapter},
    }


def _evals(tmp_path: Path) -> dict[str, DomainEval]:
    scores = {"acme": (0.4, 0.6), "north": (0.5, 0.3)}
    return {
        name: DomainEval(name, 10, _summary(*score), tmp_path / f"{name}.md", tmp_path, [])
        for name, score in scores.items()
    }


def test_pooled_weights_each_domain_by_its_answered_questions(tmp_path: Path) -> None:
    total = pooled(_evals(tmp_path))
    assert total["adapter+rag"]["questions"] == 20
    assert abs(total["adapter+rag"]["contained"] - 0.45) < 1e-9
    assert abs(total["base+rag+3shot"]["contained"] - 0.45) < 1e-9


def test_the_verdict_names_the_strongest_base() -> None:
    assert "the adapter beats it (+20.0 points)" in verdict(_summary(0.4, 0.6))
    assert "strongest base configuration, base+rag+3shot" in verdict(_summary(0.5, 0.3))
    assert verdict({"base": {"contained": 0.1}}) == ""  # no adapter+rag: nothing to say


def test_the_summary_files(tmp_path: Path) -> None:
    plan = SimpleNamespace(
        config=SimpleNamespace(eval=SimpleNamespace(report_dir=tmp_path / "reports")),
        settings=SimpleNamespace(base_model="tiny"),
        domains=[SimpleNamespace(name="acme"), SimpleNamespace(name="north")],
    )
    result = DemoResult(plan=plan, stages=[StageTiming(1, "Resolve the base model", 1.5)])
    result.evals = _evals(tmp_path)
    markdown = write_summary(result).read_text()
    assert "| 1 | Resolve the base model | 1.5 |" in markdown
    assert "| all | adapter+rag | 20 | 0 | 45.0% | 0.0% | 50.0% |" in markdown
    assert "- all domains: adapter+rag contains the answer in 45.0% of 20" in markdown
    payload = json.loads((tmp_path / "reports" / "demo-summary.json").read_text())
    assert payload["total_seconds"] == 1.5 and set(payload["evals"]) == {"acme", "north"}
    console = Console(width=160, record=True)
    console.print(results_table(result.evals))
    assert "all" in console.export_text()
