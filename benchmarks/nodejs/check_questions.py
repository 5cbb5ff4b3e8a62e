"""Check the Node.js question set against the extracted corpus.

Every question needs a unique id, gold pages that exist in the corpus folder, and an answer
that appears in the visible text of each gold page: scripts, styles, the page header (version
pickers, per-page table of contents, index of modules) and navigation (sidebar, table of
contents) left out, compared case-insensitively with whitespace collapsed. Prints a summary
line and one line per failure; exits 1 if any question fails.

    python benchmarks/nodejs/check_questions.py [--docs lorag-data/nodejs/docs] [--questions FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DOCS = HERE.parents[1] / "lorag-data" / "nodejs" / "docs"
KEYS = {"id", "question", "answer", "gold_docs"}
SKIPPED = {"script", "style", "head", "header", "nav", "template", "noscript"}
BLOCKS = {
    "p", "div", "section", "li", "ul", "ol", "dl", "dt", "dd", "pre", "blockquote", "table",
    "tr", "td", "th", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "details", "summary",
}  # fmt: skip


class _VisibleText(HTMLParser):
    """Collects the text a reader sees, without page chrome; block elements break words."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip: str | None = None  # tag of the skipped subtree's root
        self._depth = 0  # nesting of that tag inside the skipped subtree

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip is not None:
            self._depth += tag == self._skip
        elif tag in SKIPPED or dict(attrs).get("role") == "navigation":
            self._skip, self._depth = tag, 1
        elif tag in BLOCKS:
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip is None and tag in BLOCKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if self._skip is not None:
            self._depth -= tag == self._skip
            if self._depth == 0:
                self._skip = None
        elif tag in BLOCKS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if self._skip is None:
            self.parts.append(data)


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def visible_text(page: Path) -> str:
    """The page's visible text, lower-cased, whitespace collapsed."""
    parser = _VisibleText()
    parser.feed(page.read_text(encoding="utf-8"))
    parser.close()
    return normalise("".join(parser.parts))


def check(questions: Path, docs: Path) -> tuple[list[dict[str, object]], list[str]]:
    """Returns the questions read and a message for each problem found."""
    items: list[dict[str, object]] = []
    failures: list[str] = []
    seen: set[str] = set()
    texts: dict[str, str] = {}
    for n, line in enumerate(questions.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            failures.append(f"line {n}: not JSON ({exc})")
            continue
        qid = str(item.get("id", f"line {n}"))
        if set(item) != KEYS:
            failures.append(f"{qid}: keys {sorted(item)} != {sorted(KEYS)}")
            continue
        items.append(item)
        if qid in seen:
            failures.append(f"{qid}: duplicate id")
        seen.add(qid)
        gold = item["gold_docs"]
        if not isinstance(gold, list) or not gold:
            failures.append(f"{qid}: gold_docs must be a non-empty list")
            continue
        answer = normalise(str(item["answer"]))
        for name in gold:
            page = docs / str(name)
            if not page.is_file():
                failures.append(f"{qid}: gold page {name} not in {docs}")
                continue
            if name not in texts:
                texts[name] = visible_text(page)
            if answer not in texts[name]:
                failures.append(f"{qid}: answer {item['answer']!r} not in {name}")
    return items, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=Path, default=DEFAULT_DOCS)
    parser.add_argument("--questions", type=Path, default=HERE / "questions.jsonl")
    args = parser.parse_args()
    items, failures = check(args.questions, args.docs)
    per_page = Counter(str(g) for item in items for g in item["gold_docs"])  # type: ignore[attr-defined]
    busiest = max(per_page.values(), default=0)
    print(
        f"{len(items)} questions, {len(per_page)} gold pages (at most {busiest} questions on "
        f"one page), {len(failures)} failures"
    )
    for failure in failures:
        print(f"FAIL {failure}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
