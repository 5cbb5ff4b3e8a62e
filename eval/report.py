"""Run folders: every eval writes `report.md`, `results.json` and PNG plots into one folder.

A run folder is `<report_dir>/<kind>-<UTC timestamp>` (with `-2`, `-3`, ... when taken), so a
new run never overwrites an old one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

Cell = str | int | float | None


def format_cell(value: Cell, digits: int = 3) -> str:
    """A table cell: floats rounded, None as `n/a`."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.{digits}f}"
    return str(value)


@dataclass
class Table:
    """A titled table, rendered to Markdown for the report and to rich for the terminal."""

    title: str
    headers: list[str]
    rows: list[list[Cell]]
    note: str = ""

    def markdown(self) -> str:
        def escape(text: str) -> str:
            return text.replace("|", "\\|").replace("\n", " ")

        lines = [
            f"## {self.title}",
            "",
            "| " + " | ".join(escape(h) for h in self.headers) + " |",
            "|" + "|".join(" --- " for _ in self.headers) + "|",
        ]
        for row in self.rows:
            lines.append("| " + " | ".join(escape(format_cell(c)) for c in row) + " |")
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines)


@dataclass
class Report:
    """What a run produces, before it is written."""

    kind: str
    title: str
    params: dict[str, Any]
    summary: dict[str, Any]
    results: list[dict[str, Any]]
    tables: list[Table]
    figures: dict[str, Figure] = field(default_factory=dict)  # file name -> figure
    sections: dict[str, str] = field(default_factory=dict)  # heading -> Markdown, after tables
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class WrittenReport:
    folder: Path
    markdown: Path
    json: Path
    plots: list[Path]


def new_run_folder(report_dir: Path, kind: str, when: datetime) -> Path:
    """Create and return a fresh `<report_dir>/<kind>-<timestamp>` folder."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{kind}-{when.strftime('%Y%m%d-%H%M%S')}"
    for attempt in range(1, 1000):
        folder = report_dir / (stem if attempt == 1 else f"{stem}-{attempt}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise RuntimeError(f"{report_dir}: cannot create a run folder for {stem}")


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: write them as null."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_report(report: Report, report_dir: Path) -> WrittenReport:
    """Write the report's Markdown, JSON and plots into a new run folder."""
    folder = new_run_folder(report_dir, report.kind, report.created_at)
    plots = []
    for name, figure in report.figures.items():
        path = folder / name
        figure.savefig(path, dpi=100)
        plots.append(path)

    payload = {
        "kind": report.kind,
        "created_at": report.created_at.isoformat(),
        "params": report.params,
        "summary": report.summary,
        "results": report.results,
    }
    json_path = folder / "results.json"
    json_path.write_text(
        json.dumps(_finite(payload), indent=2, default=_json_default, allow_nan=False) + "\n"
    )

    parts = [
        f"# {report.title}",
        "",
        f"Run: `{folder.name}`, {report.created_at.strftime('%Y-%m-%d %H:%M:%S')} UTC",
        "",
        "Parameters:",
        "",
        *[f"- {k}: `{_param_text(v)}`" for k, v in report.params.items()],
    ]
    for table in report.tables:
        parts += ["", table.markdown()]
    for heading, text in report.sections.items():
        parts += ["", f"## {heading}", "", text.rstrip()]
    if plots:
        parts += ["", "## Plots", ""]
        parts += [f"![{p.stem}]({p.name})" for p in plots]
    parts += ["", f"Every per-item result is in `{json_path.name}`.", ""]
    md_path = folder / "report.md"
    md_path.write_text("\n".join(parts))
    return WrittenReport(folder=folder, markdown=md_path, json=json_path, plots=plots)


def _param_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


# --- plots --------------------------------------------------------------------------------


def bar_chart(
    title: str,
    groups: Sequence[str],
    series: dict[str, Sequence[float | None]],
    ylabel: str = "score",
    ylim: tuple[float, float] | None = (0.0, 1.1),
) -> Figure:
    """Grouped bars: one group per entry of `groups`, one bar per series (None drawn as 0)."""
    figure = Figure(figsize=(max(6.0, 1.2 * len(groups) * max(1, len(series)) / 2), 4.5))
    axes = figure.add_subplot()
    width = 0.8 / max(1, len(series))
    for number, (label, values) in enumerate(series.items()):
        xs = [g + (number - (len(series) - 1) / 2) * width for g in range(len(groups))]
        heights = [0.0 if v is None else v for v in values]
        bars = axes.bar(xs, heights, width=width, label=label)
        axes.bar_label(bars, labels=[format_cell(v, 2) for v in values], fontsize=7)
    axes.set_xticks(range(len(groups)), list(groups), rotation=15)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    if ylim is not None:
        axes.set_ylim(*ylim)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def line_chart(
    title: str,
    xs: Sequence[int],
    panels: dict[str, dict[str, Sequence[float | None]]],
    xlabel: str = "k",
) -> Figure:
    """One subplot per panel (e.g. a metric), one line per series (e.g. a search mode)."""
    figure = Figure(figsize=(4.5 * len(panels), 4.0))
    for number, (panel, series) in enumerate(panels.items(), start=1):
        axes = figure.add_subplot(1, len(panels), number)
        for line, (label, values) in enumerate(series.items()):
            axes.plot(list(xs), [math.nan if v is None else v for v in values],
                      marker="os^Dv"[line % 5], linestyle=["-", "--", ":", "-."][line % 4],
                      label=label)
        axes.set_title(panel)
        axes.set_xlabel(xlabel)
        axes.set_ylim(0.0, 1.05)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def histogram(
    title: str, samples: dict[str, Sequence[float]], xlabel: str = "latency (s)", bins: int = 30
) -> Figure:
    """Overlaid histograms, one per series (e.g. per configuration)."""
    figure = Figure(figsize=(7.0, 4.5))
    axes = figure.add_subplot()
    everything = [v for values in samples.values() for v in values]
    edges = np.histogram_bin_edges(everything, bins=bins) if everything else bins
    for label, values in samples.items():
        if values:
            axes.hist(list(values), bins=edges, alpha=0.6, label=f"{label} (n={len(values)})")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("requests")
    axes.set_title(title)
    if any(samples.values()):
        axes.legend(fontsize=8)
    figure.tight_layout()
    return figure
