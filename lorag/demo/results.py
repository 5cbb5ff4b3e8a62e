"""What each stage of a demo run produced, kept for the summary and for the tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorag.demo.plan import DemoPlan


@dataclass
class StageTiming:
    number: int
    title: str
    seconds: float


@dataclass
class AskedQuestion:
    domain: str
    question: str
    expected: str
    answer: str
    sources: list[dict[str, Any]]
    served_by: dict[str, Any]


@dataclass
class DomainEval:
    domain: str
    questions: int
    summary: dict[str, dict[str, Any]]  # configuration -> metrics
    report: Path
    results: Path
    plots: list[Path]


@dataclass
class DemoResult:
    plan: DemoPlan
    stages: list[StageTiming] = field(default_factory=list)
    model_dir: Path | None = None
    indexes: dict[str, Any] = field(default_factory=dict)  # domain -> IndexReport
    adapters: dict[str, Path] = field(default_factory=dict)  # domain -> adapter v1 folder
    training: dict[str, dict[str, Any]] = field(default_factory=dict)  # domain -> metrics
    answers: list[AskedQuestion] = field(default_factory=list)
    replacement: Any = None  # eval.load.SwapRun
    evals: dict[str, DomainEval] = field(default_factory=dict)
    server_exit_code: int | None = None
    leftover_processes: list[int] = field(default_factory=list)
    summary_file: Path | None = None
