"""Report files: Markdown tables, parseable JSON, real PNG plots, fresh run folders."""

import json
import math
from datetime import UTC, datetime
from pathlib import Path

from eval.answers import CONFIGURATIONS, score_answer
from eval.answers_report import build_report
from eval.dataset import parse_line
from eval.load import LoadRun, ReplacementRecord, RequestRecord
from eval.load import build_report as build_load_report
from eval.report import Report, Table, new_run_folder, write_report
from tests.eval.reportcheck import check_written


def test_answers_report_is_well_formed(tmp_path: Path) -> None:
    item = parse_line(
        '{"question": "How long do refunds take?", "answer": "30 days", "gold_doc": "r.md"}', 1
    )
    sources = [{"index": 1, "doc_id": "r.md", "text": "Refunds take 30 days.", "score": 0.9}]
    rows = []
    for number, name in enumerate(CONFIGURATIONS):
        config = CONFIGURATIONS[name]
        output = "30 days [1]" if config.retrieval else "maybe a week"
        used = sources if config.retrieval else []
        rows.append({
            "id": item.id, "config": name, "error": None, "output": output,
            "latency_s": 0.1 * (number + 1), "completion_tokens": 4,
            "served_by": {"adapter_version": 1 if config.adapter else None},
            "sources": used, **score_answer(item, output, used),
        })
    rows.append({"id": "line-2", "config": "base", "error": "HTTP 500: boom", "latency_s": 0.2})
    report = build_report(rows, list(CONFIGURATIONS.values()), {"domain": "shop"})
    written = write_report(report, tmp_path)
    payload = check_written(written, {"configs.png", "latency.png"}, ["config"])
    summary = payload["summary"]["configs"]
    assert summary["base+rag"]["exact_match"] == 1.0  # the [1] marker is not part of the answer
    assert summary["base+rag"]["contained"] == 1.0
    assert summary["base+rag"]["groundedness"] == 1.0
    assert summary["adapter+rag"]["citation_accuracy"] == 1.0
    assert summary["base"]["groundedness"] is None  # no sources without retrieval
    assert summary["base"]["errors"] == 1 and summary["base"]["answered"] == 1
    assert len(payload["results"]) == 5
    markdown = written.markdown.read_text()
    assert "| base+rag | 1 | 0 |" in markdown
    assert "HTTP 500: boom" in markdown  # failed requests get their own table


def test_load_report_is_well_formed(tmp_path: Path) -> None:
    records = [
        RequestRecord(client=i % 2, started_s=0.1 * i, latency_s=0.5 + 0.01 * i,
                      ttft_s=0.05 + 0.001 * i, completion_tokens=16, adapter_version=1 + i // 10)
        for i in range(20)
    ]
    records.append(RequestRecord(client=0, started_s=2.0, latency_s=0.1, ttft_s=None,
                                 completion_tokens=0, error="timeout"))
    swaps = [ReplacementRecord("a", "a-v2", 1.0, 0.3, 200, response={"version": 2})]
    run = LoadRun(model="shop", concurrency=2, wall_s=4.0, requests=records, replacements=swaps)
    written = write_report(build_load_report(run, {"model": "shop"}), tmp_path)
    payload = check_written(written, {"latency.png"}, ["requests", "at s", "error"])
    summary = payload["summary"]
    assert summary["requests"] == 21 and summary["ok"] == 20 and summary["errors"] == 1
    assert summary["output_tokens_per_s"] == 20 * 16 / 4.0
    assert summary["latency_p50_s"] == 0.5 + 0.01 * 9.5
    assert summary["adapter_versions"] == {"1": 10, "2": 10}
    assert summary["error_kinds"] == {"timeout": 1}


def test_run_folders_never_collide_and_nan_becomes_null(tmp_path: Path) -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    first = new_run_folder(tmp_path, "x", when)
    second = new_run_folder(tmp_path, "x", when)
    assert first.name == "x-20260102-030405" and second.name == "x-20260102-030405-2"
    report = Report(
        kind="x", title="T", params={"p": [1, 2]}, summary={"v": math.nan},
        results=[{"a": math.inf}], tables=[Table("t", ["h", "v"], [["row|pipe", None]])],
        created_at=when,
    )
    written = write_report(report, tmp_path)
    assert written.folder.name == "x-20260102-030405-3"
    payload = json.loads(written.json.read_text())
    assert payload["summary"]["v"] is None and payload["results"] == [{"a": None}]
    assert "| row\\|pipe | n/a |" in written.markdown.read_text()
