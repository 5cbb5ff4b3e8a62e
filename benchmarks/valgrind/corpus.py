"""The Valgrind User Manual as a retrieval corpus: HTML from the Debian package `valgrind`.

Debian ships the manual at /usr/share/doc/valgrind/html (package `valgrind`, 3.19.0 on this
machine's image: 39 pages and an index). This copies the pages into a folder that
`lorag index` reads, and records where they came from (package version, SHA-256 of every
page) so that a figure can be traced to its corpus. Offline: from the installed package, or
from a downloaded .deb (`apt-get download valgrind` on a machine with a mirror; `--deb`).

    python benchmarks/valgrind/corpus.py [--out lorag-data/valgrind/docs] [--deb FILE.deb]
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
INSTALLED = Path("/usr/share/doc/valgrind/html")
DEFAULT_OUT = ROOT / "lorag-data" / "valgrind" / "docs"


def _package_version() -> str:
    run = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "valgrind"],
        check=False,
        capture_output=True,
        text=True,
    )
    return run.stdout.strip() if run.returncode == 0 else "unknown"


def extract(out: Path = DEFAULT_OUT, deb: Path | None = None) -> dict[str, object]:
    """Copy the manual's HTML pages into `out` (replacing it); returns the provenance record."""
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
        pages = sorted(source.glob("*.html"))
        if not pages:
            raise SystemExit(
                f"no HTML pages in {source}: install the Debian package (`apt-get install "
                "valgrind`) or pass a downloaded .deb with --deb"
            )
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for page in pages:
            shutil.copyfile(page, out / page.name)
    record = {
        "source": "Debian package valgrind" + (f" ({deb.name})" if deb else f" ({INSTALLED})"),
        "version": version,
        "pages": {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.html"))
        },
    }
    (out.parent / "corpus.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--deb", type=Path, help="a downloaded valgrind .deb instead")
    args = parser.parse_args()
    record = extract(args.out, args.deb)
    print(f"{len(record['pages'])} pages of valgrind {record['version']} in {args.out}")


if __name__ == "__main__":
    main()
