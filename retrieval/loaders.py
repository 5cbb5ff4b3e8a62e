"""Finding and reading documents: Markdown, plain text, HTML and PDF.

`scan_folder` walks a folder and reads each candidate file's bytes (for its content hash);
`parse_document` turns those bytes into sections, each with its heading path, which the
chunker then splits. Files that cannot be used are reported with a reason, never fatal.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

DocKind = Literal["markdown", "text", "html", "pdf"]

EXTENSIONS: dict[str, DocKind] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".mdx": "markdown",
    ".txt": "text",
    ".text": "text",
    ".rst": "text",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}

_BINARY_PROBE = 8192


class LoaderError(ValueError):
    """A file's content cannot be parsed (corrupt, encrypted, not what its name says)."""


@dataclass(frozen=True)
class Section:
    """A run of text under one heading path (empty for text without headings)."""

    headings: tuple[str, ...]
    text: str

    @property
    def heading(self) -> str:
        return " > ".join(self.headings)


@dataclass
class Document:
    """A parsed document: its id (path relative to the indexed root), sections and tags."""

    doc_id: str
    kind: DocKind
    content_hash: str
    sections: list[Section]
    tags: list[str] = field(default_factory=list)


@dataclass
class SourceFile:
    """A file found by `scan_folder`, read but not yet parsed."""

    doc_id: str
    path: Path
    kind: DocKind
    data: bytes
    content_hash: str


@dataclass(frozen=True)
class ScanSkip:
    """A file `scan_folder` left out. `transient` errors keep the file's indexed chunks."""

    doc_id: str
    reason: str
    transient: bool = False


# Bumped when a parser's output changes, so that an incremental `lorag index` re-chunks the
# documents it affects (the version is part of their content hash) and leaves the rest alone.
PARSER_VERSIONS: dict[DocKind, str] = {"html": "html-3"}


def content_hash(data: bytes, kind: DocKind | None = None) -> str:
    """SHA-256 of a file's bytes, salted with its parser's version where it has one."""
    digest = hashlib.sha256(data)
    if kind in PARSER_VERSIONS:
        digest.update(b"\x00parser:" + PARSER_VERSIONS[kind].encode())
    return digest.hexdigest()


def _walk(root: Path) -> Iterator[Path]:
    """Files under `root` in a stable order, leaving out hidden files and folders."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(folder) / name


def scan_folder(root: Path, max_bytes: int) -> tuple[list[SourceFile], list[ScanSkip]]:
    """Read every candidate file under `root`; return the usable ones and the skipped ones."""
    found: list[SourceFile] = []
    skipped: list[ScanSkip] = []
    for path in _walk(root):
        doc_id = path.relative_to(root).as_posix()
        kind = EXTENSIONS.get(path.suffix.lower())
        if kind is None:
            suffix = path.suffix or "(no extension)"
            skipped.append(ScanSkip(doc_id, f"unsupported file type {suffix}"))
            continue
        try:
            size = path.stat().st_size
            if size > max_bytes:
                skipped.append(
                    ScanSkip(
                        doc_id,
                        f"too large ({size / 1e6:.1f} MB > {max_bytes / 1e6:.1f} MB limit, "
                        "retrieval.max_file_mb)",
                    )
                )
                continue
            data = path.read_bytes()
        except OSError as err:
            reason = f"unreadable: {err.strerror or err}"
            skipped.append(ScanSkip(doc_id, reason, transient=True))
            continue
        if not data.strip():
            skipped.append(ScanSkip(doc_id, "empty file"))
            continue
        if kind != "pdf" and b"\x00" in data[:_BINARY_PROBE]:
            skipped.append(ScanSkip(doc_id, "binary content in a text file"))
            continue
        found.append(SourceFile(doc_id, path, kind, data, content_hash(data, kind)))
    return found, skipped


def parse_document(source: SourceFile) -> Document:
    """Parse a file's bytes into sections. Raises LoaderError for content it cannot parse."""
    if source.kind == "pdf":
        sections, tags = _parse_pdf(source.data), []
    else:
        text = _decode(source.data)
        if source.kind == "markdown":
            sections, tags = _parse_markdown(text)
        elif source.kind == "html":
            sections, tags = _parse_html(text)
        else:
            sections, tags = _plain_sections(text), []
    return Document(source.doc_id, source.kind, source.content_hash, sections, tags)


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        if text.count("\ufffd") > max(8, len(text) // 100):
            raise LoaderError("not UTF-8 text (looks binary or uses another encoding)") from None
        return text


def _normalise_space(text: str) -> str:
    """Strip trailing spaces and collapse runs of blank lines into one paragraph break."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _plain_sections(text: str) -> list[Section]:
    text = _normalise_space(text)
    return [Section((), text)] if text else []


def _tags_of(value: object) -> list[str]:
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list):
        items = [str(item) for item in value]
    else:
        return []
    return sorted({item.strip() for item in items if item.strip()})


# ---- Markdown -------------------------------------------------------------------------------

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")


def _front_matter(text: str) -> tuple[dict, str]:
    """Split YAML front matter (between `---` lines at the very top) from the body."""
    if not text.startswith("---"):
        return {}, text
    lines = text.split("\n")
    if lines[0].strip() != "---":
        return {}, text
    for end in range(1, len(lines)):
        if lines[end].strip() in ("---", "..."):
            try:
                meta = yaml.safe_load("\n".join(lines[1:end])) or {}
            except yaml.YAMLError:
                return {}, text
            if not isinstance(meta, dict):
                return {}, text
            return meta, "\n".join(lines[end + 1 :])
    return {}, text


def _parse_markdown(text: str) -> tuple[list[Section], list[str]]:
    meta, body = _front_matter(text.replace("\r\n", "\n").replace("\r", "\n"))
    tags = _tags_of(meta.get("tags"))
    stack: list[tuple[int, str]] = []
    sections: list[Section] = []
    current: list[str] = []
    fence: str | None = None

    def flush() -> None:
        content = _normalise_space("\n".join(current))
        if content:
            sections.append(Section(tuple(title for _, title in stack), content))
        current.clear()

    def open_heading(level: int, title: str) -> None:
        flush()
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title.strip() or f"(h{level})"))

    for line in body.split("\n"):
        fence_match = _FENCE.match(line)
        if fence is not None:
            current.append(line)
            if (
                fence_match
                and fence_match.group(1)[0] == fence[0]
                and len(fence_match.group(1)) >= len(fence)
            ):
                fence = None
            continue
        if fence_match:
            fence = fence_match.group(1)
            current.append(line)
            continue
        atx = _ATX.match(line)
        if atx:
            open_heading(len(atx.group(1)), atx.group(2) or "")
            continue
        setext = _SETEXT.match(line)
        # A setext underline turns the paragraph line just above it into a heading.
        if (
            setext
            and current
            and current[-1].strip()
            and (len(current) == 1 or not current[-2].strip())
        ):
            title = current.pop()
            open_heading(1 if setext.group(1)[0] == "=" else 2, title)
            continue
        current.append(line)
    flush()
    return sections, tags


# ---- HTML -----------------------------------------------------------------------------------

_BLOCK_TAGS = {
    "p", "div", "section", "article", "main", "header", "footer", "aside", "nav", "li", "ul",
    "ol", "dl", "dt", "dd", "pre", "blockquote", "table", "tr", "td", "th", "br", "hr",
    "figure", "figcaption", "details", "summary",
}  # fmt: skip
_HEADING_MARK = "\x00H"
_CODE_MARK = "\x00C"  # starts each line of a <pre> block: kept as written, indentation too
# Site chrome that repeats on every page (menus, page tables of contents, prev/next bars,
# breadcrumbs): it matches every query a little and dilutes the page's own words.
_CHROME_TAGS = ["nav", "aside", "script", "style", "noscript", "template", "head", "svg"]
_CHROME_ROLES = {"navigation", "banner", "contentinfo", "search"}
_CHROME_CLASSES = {
    "nav", "navbar", "navheader", "navfooter", "navigation", "toc", "breadcrumb",
    "breadcrumbs", "sidebar", "sidenav", "menu", "skip-link", "skiplink", "headerlink",
}  # fmt: skip


# A <header> or <footer> outside these is the page's banner or footer landmark (HTML-AAM's
# implicit roles `banner` and `contentinfo`): the site's title bar, module list or legal
# line. Inside one of them it belongs to that article or section (its title, its byline).
_SCOPING_TAGS = ["article", "aside", "main", "nav", "section"]


def _is_chrome(element: Any) -> bool:
    role = str(element.get("role", "")).lower()
    classes = {str(c).lower() for c in element.get("class") or []}
    if role in _CHROME_ROLES or classes & _CHROME_CLASSES:
        return True
    return element.name in ("header", "footer") and element.find_parent(_SCOPING_TAGS) is None


def _parse_html(text: str) -> tuple[list[Section], list[str]]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(text, "html.parser")
    tags: list[str] = []
    for meta in soup.find_all("meta"):
        if str(meta.get("name", "")).lower() == "keywords":
            tags = _tags_of(str(meta.get("content", "")))
    for element in soup(_CHROME_TAGS):
        element.decompose()
    for element in [e for e in soup.find_all(True) if _is_chrome(e)]:
        if not element.decomposed:  # not already gone with an enclosing element
            element.decompose()
    body = soup.body or soup
    for pre in body.find_all("pre"):
        code = pre.get_text().strip("\n")
        pre.replace_with("\n" + "\n".join(_CODE_MARK + line for line in code.split("\n")) + "\n")
    # Headings become marker lines and block elements get line breaks, so that one pass of
    # get_text() yields the text in reading order with the heading structure still visible.
    for heading in body.find_all(re.compile(r"^h[1-6]$")):
        title = " ".join(heading.get_text(" ").split())
        heading.replace_with(f"\n{_HEADING_MARK}{heading.name[1]}{title}\n")
    for block in body.find_all(_BLOCK_TAGS):
        block.insert_before("\n")
        block.insert_after("\n")
    stack: list[tuple[int, str]] = []
    sections: list[Section] = []
    current: list[str] = []

    def flush() -> None:
        content = _normalise_space(
            "\n".join(
                line.removeprefix(_CODE_MARK)
                if line.startswith(_CODE_MARK)
                else " ".join(line.split())
                for line in current
            )
        )
        if content:
            sections.append(Section(tuple(title for _, title in stack), content))
        current.clear()

    for line in body.get_text().split("\n"):
        if line.startswith(_HEADING_MARK):
            flush()
            level, title = int(line[len(_HEADING_MARK)]), line[len(_HEADING_MARK) + 1 :]
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, title or f"(h{level})"))
        else:
            current.append(line)
    flush()
    return sections, tags


# ---- PDF ------------------------------------------------------------------------------------


def _parse_pdf(data: bytes) -> list[Section]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    if not data.lstrip().startswith(b"%PDF"):
        raise LoaderError("not a PDF file (no %PDF header)")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise LoaderError("encrypted PDF")
        sections = []
        for number, page in enumerate(reader.pages, start=1):
            text = _normalise_space(page.extract_text() or "")
            if text:
                sections.append(Section((f"page {number}",), text))
        return sections
    except LoaderError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as err:
        raise LoaderError(f"cannot parse PDF: {err}") from err
