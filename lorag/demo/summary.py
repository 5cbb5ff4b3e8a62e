"""The demo's results as tables and verdicts: on the console, and in
`<report_dir>/demo-summary.md` and `.json`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.table import Table

from lorag.demo.results import DemoResult, DomainEval, StageTiming

METRICS = ("contained", "exact_match", "token_f1")


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def pooled(evals: dict[str, DomainEval]) -> dict[str, dict[str, Any]]:
    """Each configuration's metrics over every domain's questions together."""
    totals: dict[str, dict[str, Any]] = {}
    for result in evals.values():
        for config, s in result.summary.items():
            t = totals.setdefault(config, {"questions": 0, "errors": 0, "answered": 0})
            t["questions"] += s["questions"]
            t["errors"] += s["errors"]
            t["answered"] += s["answered"]
            for metric in METRICS:
                if s.get(metric) is not None:
                    t[f"_{metric}"] = t.get(f"_{metric}", 0.0) + s[metric] * s["answered"]
    for t in totals.values():
        for metric in METRICS:
            total = t.pop(f"_{metric}", None)
            t[metric] = None if total is None or not t["answered"] else total / t["answered"]
    return totals


def _rows(evals: dict[str, DomainEval]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """`(domain, configuration, metrics)`, then `all` pooled when there are several."""
    summaries = [(name, result.summary) for name, result in evals.items()]
    if len(evals) > 1:
        summaries.append(("all", pooled(evals)))
    for name, summary in summaries:
        for config, s in summary.items():
            yield name, config, s


def verdict(summary: dict[str, dict[str, Any]]) -> str:
    """adapter+rag against the strongest configuration without an adapter."""
    adapter = (summary.get("adapter+rag") or {}).get("contained")
    bases = {
        name: s["contained"]
        for name, s in summary.items()
        if not name.startswith("adapter") and s.get("contained") is not None
    }
    if adapter is None or not bases:
        return ""
    strongest = max(bases, key=lambda name: bases[name])
    delta = 100 * (adapter - bases[strongest])
    word = "beats" if delta > 0 else "does not beat"
    return (
        f"adapter+rag contains the answer in {100 * adapter:.1f}% of "
        f"{summary['adapter+rag']['questions']} held-out questions; the strongest base "
        f"configuration, {strongest}, in {100 * bases[strongest]:.1f}%: the adapter {word} it "
        f"({delta:+.1f} points)"
    )


def overall_verdict(evals: dict[str, DomainEval]) -> str:
    """The verdict over every domain's questions pooled; empty for a single domain."""
    return verdict(pooled(evals)) if len(evals) > 1 else ""


def results_table(evals: dict[str, DomainEval]) -> Table:
    table = Table(title="Held-out questions: answer metrics per configuration")
    for column in ("domain", "configuration", "questions", "errors", "contained", "exact match",
                   "token F1", "p50 latency"):  # fmt: skip
        table.add_column(column)
    for name, config, s in _rows(evals):
        latency = s.get("latency_p50_s")
        table.add_row(
            name, config, str(s["questions"]), str(s["errors"]),
            *(_pct(s[m]) for m in METRICS),
            "n/a" if latency is None else f"{latency:.1f} s",
        )  # fmt: skip
    return table


def timings_table(stages: list[StageTiming]) -> Table:
    timings = Table(title="Stage timings")
    timings.add_column("#")
    timings.add_column("stage")
    timings.add_column("seconds", justify="right")
    for stage in stages:
        timings.add_row(str(stage.number), stage.title, f"{stage.seconds:.1f}")
    timings.add_row("", "total", f"{sum(s.seconds for s in stages):.1f}")
    return timings


def _markdown(result: DemoResult, total: float) -> list[str]:
    plan = result.plan
    lines = [
        "# lorag demo",
        "",
        f"Base model: `{plan.settings.base_model}`; domains: "
        + ", ".join(f"`{d.name}`" for d in plan.domains),
        "",
        "## Stage timings",
        "",
        "| # | stage | seconds |",
        "| --- | --- | --- |",
        *[f"| {s.number} | {s.title} | {s.seconds:.1f} |" for s in result.stages],
        f"| | total | {total:.1f} |",
    ]
    if result.replacement is not None:
        r = result.replacement
        lines += [
            "",
            "## Adapter replacement under load",
            "",
            f"`{r.domain}`: v{r.replaced_version} -> v{r.new_version} with {r.in_flight_at_swap} "
            f"requests in flight; {r.requests} requests, {len(r.failures)} failed; served by "
            + ", ".join(f"v{v}: {n}" for v, n in r.versions.items()),
        ]
    if result.evals:
        lines += [
            "",
            "## Held-out questions",
            "",
            "| domain | configuration | questions | errors | contained | exact match | token F1 |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *(
                f"| {name} | {config} | {s['questions']} | {s['errors']} | "
                + " | ".join(_pct(s[m]) for m in METRICS) + " |"
                for name, config, s in _rows(result.evals)
            ),
            "",
        ]
        for name, e in result.evals.items():
            found = verdict(e.summary)
            lines.append(f"- `{name}`: report `{e.report}`" + (f"; {found}" if found else ""))
        if overall := overall_verdict(result.evals):
            lines.append(f"- all domains: {overall}")
    return lines


def write_summary(result: DemoResult) -> Path:
    """`<report_dir>/demo-summary.md` and `.json`: stage timings, results, report links."""
    folder = Path(result.plan.config.eval.report_dir)
    folder.mkdir(parents=True, exist_ok=True)
    total = sum(stage.seconds for stage in result.stages)
    path = folder / "demo-summary.md"
    path.write_text("\n".join(_markdown(result, total)) + "\n")
    payload = {
        "stages": [vars(s) for s in result.stages],
        "total_seconds": total,
        "training": result.training,
        "replacement": vars(result.replacement) if result.replacement else None,
        "evals": {
            n: {"summary": e.summary, "report": str(e.report)} for n, e in result.evals.items()
        },
    }
    (folder / "demo-summary.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
