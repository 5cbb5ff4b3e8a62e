"""HTML pages of a Debian package's documentation, copied out with a provenance record.

Shared by the retrieval corpora (benchmarks/valgrind, benchmarks/nodejs): from the installed
package or from a downloaded .deb, every page's SHA-256 and the package version recorded in
`<out>/../corpus.json`, so that a figure can be traced to its corpus.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path


def _installed_version(package: str) -> str:
    run = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package], check=False, capture_output=True, text=True
    )
    return run.stdout.strip() if run.returncode == 0 else "unknown"


def extract_html(
    package: str,
    installed: Path,
    out: Path,
    deb: Path | None = None,
    excluded: frozenset[str] = frozenset(),
) -> dict[str, object]:
    """Copy `installed/*.html` (or the same folder of `deb`) into `out`, replacing it."""
    with tempfile.TemporaryDirectory() as tmp:
        if deb is not None:
            subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
            source = Path(tmp) / installed.relative_to("/")
            version = subprocess.run(
                ["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True, text=True
            ).stdout.strip()
        else:
            source, version = installed, _installed_version(package)
        pages = [p for p in sorted(source.glob("*.html")) if p.name not in excluded]
        if not pages:
            raise SystemExit(
                f"no HTML pages in {source}: install the Debian package (`apt-get install "
                f"{package}`) or pass a downloaded .deb with --deb"
            )
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for page in pages:
            shutil.copyfile(page, out / page.name)
    record: dict[str, object] = {
        "source": f"Debian package {package}" + (f" ({deb.name})" if deb else f" ({installed})"),
        "version": version,
        "pages": {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.html"))
        },
    }
    if excluded:
        record["excluded"] = sorted(excluded)
    (out.parent / "corpus.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
