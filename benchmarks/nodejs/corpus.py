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
import sys
from pathlib import Path

# appended, not prepended: benchmarks/retrieval.py must not shadow the `retrieval` package
sys.path.append(str(Path(__file__).resolve().parents[1]))

from debian_docs import extract_html

ROOT = Path(__file__).resolve().parents[2]
INSTALLED = Path("/usr/share/doc/nodejs/api")
DEFAULT_OUT = ROOT / "lorag-data" / "nodejs" / "docs"
EXCLUDED = {"all.html", "index.html"}  # a concatenation of all pages; a table of contents


def extract(out: Path = DEFAULT_OUT, deb: Path | None = None) -> dict[str, object]:
    """Copy the pages into `out` (replacing it); returns the provenance record."""
    return extract_html("nodejs", INSTALLED, out, deb, frozenset(EXCLUDED))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--deb", type=Path, help="a downloaded nodejs .deb instead")
    args = parser.parse_args()
    record = extract(args.out, args.deb)
    print(f"{len(record['pages'])} pages of nodejs {record['version']} in {args.out}")


if __name__ == "__main__":
    main()
