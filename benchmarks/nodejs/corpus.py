"""The Node.js API documentation as a retrieval corpus: HTML from the Debian package `nodejs`.

The NodeSource build of the Debian package `nodejs` ships the API reference at
/usr/share/doc/nodejs/api (20.20.2 on this machine's image: one HTML page per module, with the
same text as Markdown and JSON next to it). This copies the HTML pages into a folder that
`lorag index` reads, leaving out `all.html` (every page again, concatenated) and `index.html`
(only a list of links to the pages), and records where they came from (package version,
SHA-256 of every page) so that a figure can be traced to its corpus. Offline: from the
installed package, or from a downloaded .deb (`apt-get download nodejs` on a machine with the
NodeSource repository; `--deb`).

    python benchmarks/nodejs/corpus.py [--out lorag-data/nodejs/docs] [--deb FILE.deb]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INSTALLED = Path("/usr/share/doc/nodejs/api")
DEFAULT_OUT = ROOT / "lorag-data" / "nodejs" / "docs"
EXCLUDED = {"all.html", "index.html"}  # a concatenation of all pages; a table of contents


def _package_version() -> str:
    run = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "nodejs"],
        check=False,
        capture_output=True,
        text=True,
    )
    return run.stdout.strip() if run.returncode == 0 else "unknown"


def extract(out: Path = DEFAULT_OUT, deb: Path | None = None) -> dict[str, object]:
    """Copy the API pages into `out` (replacing it); returns the provenance record."""
    with tempfile.TemporaryDirectory() as tmp:
        if deb is not None:
            subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
            source = Path(tmp) / INSTALLED.relative_to("/")
            version = subprocess.run(
                ["dpkg-deb", "-f", str(deb), "Version"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
        else:
            source, version = INSTALLED, _package_version()
        pages = [p for p in sorted(source.glob("*.html")) if p.name not in EXCLUDED]
        if not pages:
            raise SystemExit(
                f"no HTML pages in {source}: install the Debian package (`apt-get install "
                "nodejs`) or pass a downloaded .deb with --deb"
            )
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for page in pages:
            shutil.copyfile(page, out / page.name)
    record = {
        "source": "Debian package nodejs" + (f" ({deb.name})" if deb else f" ({INSTALLED})"),
        "version": version,
        "excluded": sorted(EXCLUDED),
        "pages": {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.html"))
        },
    }
    (out.parent / "corpus.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--deb", type=Path, help="a downloaded nodejs .deb instead")
    args = parser.parse_args()
    record = extract(args.out, args.deb)
    print(f"{len(record['pages'])} pages of nodejs {record['version']} in {args.out}")


if __name__ == "__main__":
    main()
