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
import sys
from pathlib import Path

# appended, not prepended: benchmarks/retrieval.py must not shadow the `retrieval` package
sys.path.append(str(Path(__file__).resolve().parents[1]))

from debian_docs import extract_html

ROOT = Path(__file__).resolve().parents[2]
INSTALLED = Path("/usr/share/doc/valgrind/html")
DEFAULT_OUT = ROOT / "lorag-data" / "valgrind" / "docs"


def extract(out: Path = DEFAULT_OUT, deb: Path | None = None) -> dict[str, object]:
    """Copy the pages into `out` (replacing it); returns the provenance record."""
    return extract_html("valgrind", INSTALLED, out, deb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--deb", type=Path, help="a downloaded valgrind .deb instead")
    args = parser.parse_args()
    record = extract(args.out, args.deb)
    print(f"{len(record['pages'])} pages of valgrind {record['version']} in {args.out}")


if __name__ == "__main__":
    main()
