"""The answers eval's report: per-configuration means, the strongest base and each
adapter's margin over it, failed requests, plots, and the few-shot prompt as sent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eval.answers import METRICS, Configuration, strongest_base
from eval.metrics import mean_or_none, percentile
from eval.report import Report, Table, bar_chart, histogram


def summarise(rows: Sequence[dict[str, Any]], configs: Sequence[Configuration]) -> dict[str, Any]:
    """Per configuration: means of each metric over answered questions, errors, latency."""
    summary: dict[str, Any] = {}
    for config in configs:
        mine = [r for r in rows if r["config"] == config.name]
        ok = [r for r in mine if r["error"] is None]
        latencies = [r["latency_s"] for r in ok]
        summary[config.name] = {
            "questions": len(mine),
            "answered": len(ok),
            "errors": len(mine) - len(ok),
            **{m: mean_or_none(r.get(m) for r in ok) for m in METRICS},
            "latency_p50_s": percentile(latencies, 50),
            "latency_p95_s": percentile(latencies, 95),
            "mean_completion_tokens": mean_or_none(r.get("completion_tokens") for r in ok),
            "judge_graded": sum(1 for r in ok if r.get("judge") is not None),
            "adapter_versions": sorted(
                {
                    r["served_by"]["adapter_version"]
                    for r in ok
                    if (r.get("served_by") or {}).get("adapter_version") is not None
                }
            ),
        }
    return summary


def _margin(summary: dict[str, Any], strongest: str | None) -> dict[str, Any]:
    """Each adapter configuration's containment minus the strongest base's."""
    if strongest is None:
        return {}
    bar = summary[strongest]["contained"]
    return {
        "margins": {
            name: s["contained"] - bar
            for name, s in summary.items()
            if name.startswith("adapter") and s["contained"] is not None
        }
    }


def _prompt_sections(
    rows: Sequence[dict[str, Any]], configs: Sequence[Configuration]
) -> dict[str, str]:
    """The exact prompt of each few-shot configuration's first question, for the report."""
    sections = {}
    for config in configs:
        if not config.shots:
            continue
        first = next((r for r in rows if r["config"] == config.name and r.get("prompt")), None)
        if first is not None:
            sections[f"The prompt {config.name} sent for {first['id']}"] = (
                "Sent to `/v1/completions` with `model: base`, temperature 0, stop at a "
                "newline; the solved examples are training questions, each with its own "
                "retrieved context.\n\n```text\n" + first["prompt"] + "\n```"
            )
    return sections


def build_report(
    rows: Sequence[dict[str, Any]],
    configs: Sequence[Configuration],
    params: dict[str, Any],
) -> Report:
    """Tables, plots and per-question results of an answers eval."""
    summary = summarise(rows, configs)
    strongest = strongest_base(summary, configs)
    judged = params.get("judge", "off") != "off"
    metrics = [
        m
        for m in METRICS
        if any(s[m] is not None for s in summary.values()) or (m == "judge" and judged)
    ]
    headers = ["config", "answered", "errors", *metrics, "p50 s", "p95 s"]
    table = Table(
        title=f"Answers: {params.get('domain', '')}",
        headers=headers,
        rows=[
            [
                name,
                s["answered"],
                s["errors"],
                *[s[m] for m in metrics],
                s["latency_p50_s"],
                s["latency_p95_s"],
            ]
            for name, s in summary.items()
        ],
        note=(
            "Means over answered questions. exact_match/token_f1/contained compare the output "
            "with the answer and aliases (SQuAD normalisation); groundedness and "
            "citation_accuracy need returned sources (n/a without retrieval); citation_accuracy "
            "also needs gold documents."
        ),
    )
    if strongest:
        table.note += (
            f" Strongest configuration without an adapter: {strongest}"
            + "".join(
                f"; {name} minus {strongest}: {value:+.1%} contained"
                for name, value in _margin(summary, strongest).get("margins", {}).items()
            )
            + "."
        )
    errors = [r for r in rows if r["error"] is not None]
    tables = [table]
    if errors:
        tables.append(
            Table(
                title="Failed requests",
                headers=["config", "id", "error"],
                rows=[[r["config"], r["id"], r["error"]] for r in errors[:50]],
                note=f"{len(errors)} failed request(s)" + (", first 50 shown" if len(errors) > 50
                                                            else ""),
            )
        )
    figures = {
        "configs.png": bar_chart(
            f"Configurations side by side: {params.get('domain', '')}",
            metrics,
            {name: [s[m] for m in metrics] for name, s in summary.items()},
        ),
        "latency.png": histogram(
            "Request latency by configuration",
            {
                c.name: [r["latency_s"] for r in rows if r["config"] == c.name and not r["error"]]
                for c in configs
            },
        ),
    }
    return Report(
        sections=_prompt_sections(rows, configs),
        kind="answers",
        title=f"Answers eval: {params.get('domain', '')}",
        params=params,
        summary={"configs": summary, "strongest_base": strongest, **_margin(summary, strongest)},
        results=list(rows),
        tables=tables,
        figures=figures,
    )
