"""Validate the example domains under examples/: documents, domain.yaml and QA splits.

Usage: python examples/validate.py [DOMAIN_DIR ...]   (default: every examples/*/domain.yaml)

Checks, per domain:
- domain.yaml has non-empty `name` (equal to the folder name), `description`, `system_prompt`;
- every document under docs/ (.md, .txt, .html) has 250-700 words, and .md/.html have headings;
- every line of qa/train.jsonl and qa/heldout.jsonl is a JSON object with `question`, `answer`
  (1-8 words), optional `aliases` (list of strings) and `gold_doc` (a path under docs/);
- the answer occurs verbatim (case-insensitive, whitespace collapsed) in the gold document's
  text (the raw text for Markdown/text, the visible text for HTML); aliases are other accepted
  surface forms of the same answer and need not occur;
- answers and aliases are at least 3 characters and not a bare number word, so that
  substring containment does not match unrelated output;
- no question is repeated within a domain, and no held-out answer equals a train answer asked of
  the same document (held-out questions must be about facts not asked in train).

Prints a summary table and every problem as `file:line: message`; exits 1 if there are problems.
"""

from __future__ import annotations

import html.parser
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

DOC_SUFFIXES = {".md", ".txt", ".html"}
SPLITS = ("train", "heldout")
MIN_WORDS, MAX_WORDS = 250, 700
MAX_ANSWER_WORDS = 8
# Forms so short or generic that substring containment would match unrelated output ("3" in "30").
NUMBER_WORDS = {"one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"}


class _TextExtractor(html.parser.HTMLParser):
    """Collects the visible text of an HTML page (entities decoded, tags dropped)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def document_text(path: Path) -> str:
    """Return the text of a document as a reader (and the indexer) sees it."""
    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".html":
        parser = _TextExtractor()
        parser.feed(raw)
        return " ".join(parser.parts)
    return raw


def normalise(text: str) -> str:
    """Lower-case and collapse whitespace, for containment checks."""
    return re.sub(r"\s+", " ", text).strip().lower()


@dataclass
class DomainReport:
    """Counts and problems found for one domain folder."""

    name: str
    documents: int = 0
    words: int = 0
    pairs: dict[str, int] = field(default_factory=dict)
    docs_with_questions: int = 0
    problems: list[str] = field(default_factory=list)


def _check_domain_yaml(root: Path, report: DomainReport) -> None:
    path = root / "domain.yaml"
    if not path.is_file():
        report.problems.append(f"{path}: missing")
        return
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        report.problems.append(f"{path}: expected a mapping")
        return
    for key in ("name", "description", "system_prompt"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            report.problems.append(f"{path}: field `{key}` must be a non-empty string")
    if data.get("name") != root.name:
        report.problems.append(
            f"{path}: name {data.get('name')!r} differs from folder {root.name!r}"
        )


def _check_documents(docs: Path, report: DomainReport) -> dict[str, str]:
    texts: dict[str, str] = {}
    for path in sorted(p for p in docs.rglob("*") if p.is_file()):
        doc_id = path.relative_to(docs).as_posix()
        if path.suffix not in DOC_SUFFIXES:
            report.problems.append(f"{path}: unexpected file type {path.suffix!r}")
            continue
        text = document_text(path)
        texts[doc_id] = text
        words = len(text.split())
        report.documents += 1
        report.words += words
        if not MIN_WORDS <= words <= MAX_WORDS:
            report.problems.append(f"{path}: {words} words, expected {MIN_WORDS}-{MAX_WORDS}")
        raw = path.read_text(encoding="utf-8")
        if path.suffix == ".md" and not re.search(r"^##+ ", raw, re.MULTILINE):
            report.problems.append(f"{path}: no ## headings")
        if path.suffix == ".html" and "<h2" not in raw:
            report.problems.append(f"{path}: no <h2> headings")
    return texts


def _read_split(path: Path, texts: dict[str, str], report: DomainReport) -> list[tuple[int, dict]]:
    rows: list[tuple[int, dict]] = []
    if not path.is_file():
        report.problems.append(f"{path}: missing")
        return rows
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            report.problems.append(f"{where}: not JSON ({exc})")
            continue
        if not isinstance(row, dict):
            report.problems.append(f"{where}: expected a JSON object")
            continue
        unknown = set(row) - {"question", "answer", "aliases", "gold_doc"}
        if unknown:
            report.problems.append(f"{where}: unknown fields {sorted(unknown)}")
        question, answer = row.get("question"), row.get("answer")
        aliases, gold = row.get("aliases", []), row.get("gold_doc")
        if not (isinstance(question, str) and question.strip()):
            report.problems.append(f"{where}: `question` must be a non-empty string")
            continue
        if not (isinstance(answer, str) and 1 <= len(answer.split()) <= MAX_ANSWER_WORDS):
            report.problems.append(f"{where}: `answer` must be 1-{MAX_ANSWER_WORDS} words")
            continue
        if not (isinstance(aliases, list) and all(isinstance(a, str) and a for a in aliases)):
            report.problems.append(f"{where}: `aliases` must be a list of strings")
            continue
        for form in [answer, *aliases]:
            if len(form.strip()) < 3 or form.strip().lower() in NUMBER_WORDS:
                report.problems.append(f"{where}: {form!r} is too short to check by containment")
        if gold not in texts:
            report.problems.append(f"{where}: gold_doc {gold!r} is not a document under docs/")
            continue
        if normalise(answer) not in normalise(texts[gold]):
            report.problems.append(f"{where}: answer {answer!r} does not occur verbatim in {gold}")
        rows.append((lineno, row))
    return rows


def validate_domain(root: Path) -> DomainReport:
    """Validate one domain folder (with domain.yaml, docs/, qa/) and return its report."""
    report = DomainReport(name=root.name)
    _check_domain_yaml(root, report)
    texts = _check_documents(root / "docs", report)
    splits = {s: _read_split(root / "qa" / f"{s}.jsonl", texts, report) for s in SPLITS}
    report.pairs = {s: len(rows) for s, rows in splits.items()}

    seen: dict[str, str] = {}
    for split, rows in splits.items():
        for lineno, row in rows:
            key = normalise(row["question"])
            where = f"{root / 'qa' / split}.jsonl:{lineno}"
            if key in seen:
                report.problems.append(f"{where}: question repeats {seen[key]}")
            seen[key] = where

    train_answers = {(row["gold_doc"], normalise(row["answer"])) for _, row in splits["train"]}
    for lineno, row in splits["heldout"]:
        if (row["gold_doc"], normalise(row["answer"])) in train_answers:
            report.problems.append(
                f"{root / 'qa' / 'heldout'}.jsonl:{lineno}: answer {row['answer']!r} is also a train "
                f"answer for {row['gold_doc']}"
            )
    asked = {row["gold_doc"] for rows in splits.values() for _, row in rows}
    report.docs_with_questions = len(asked)
    for doc_id in sorted(set(texts) - asked):
        report.problems.append(f"{root / 'docs' / doc_id}: no question asks about this document")
    return report


def main(argv: list[str]) -> int:
    """Validate the given domain folders (default: all under examples/) and print a report."""
    here = Path(__file__).resolve().parent
    roots = [Path(a) for a in argv] or sorted(p.parent for p in here.glob("*/domain.yaml"))
    reports = [validate_domain(root) for root in roots]
    print(f"{'domain':<20} {'docs':>5} {'words':>7} {'train':>6} {'heldout':>8} {'docs asked':>11}")
    for r in reports:
        print(
            f"{r.name:<20} {r.documents:>5} {r.words:>7} {r.pairs.get('train', 0):>6} "
            f"{r.pairs.get('heldout', 0):>8} {r.docs_with_questions:>11}"
        )
    problems = [p for r in reports for p in r.problems]
    for problem in problems:
        print(problem)
    print(f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
