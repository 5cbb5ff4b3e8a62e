"""Checks that a written run folder is well formed (shared by the eval tests)."""

import json
from pathlib import Path

import numpy as np
from matplotlib import image

from eval.report import WrittenReport

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_written(written: WrittenReport, plots: set[str], table_headers: list[str]) -> dict:
    """Assert the folder holds report.md with the tables, valid JSON and real PNG plots."""
    assert written.folder.is_dir()
    assert {p.name for p in written.plots} == plots
    for plot in written.plots:
        assert plot.read_bytes()[:8] == PNG_MAGIC
        pixels = image.imread(plot)
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
        assert float(np.std(pixels)) > 0.01, f"{plot} is blank"
    payload = json.loads(Path(written.json).read_text())
    assert {"kind", "created_at", "params", "summary", "results"} <= payload.keys()
    markdown = written.markdown.read_text()
    assert markdown.startswith("# ")
    for header in table_headers:
        line = next((ln for ln in markdown.splitlines() if ln.startswith(f"| {header} |")), None)
        assert line is not None, f"no table with first column {header!r} in report.md"
        separator = markdown.splitlines()[markdown.splitlines().index(line) + 1]
        assert separator.count("---") == line.count("|") - 1
    for plot in plots:
        assert f"]({plot})" in markdown
    assert "results.json" in markdown
    return payload
