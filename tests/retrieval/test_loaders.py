"""Loaders and folder scanning: Markdown, text, HTML, PDF, and every kind of bad file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from retrieval.loaders import (
    PARSER_VERSIONS,
    LoaderError,
    SourceFile,
    content_hash,
    parse_document,
    scan_folder,
)
from tests.retrieval.corpus import API_HTML, INSTALL_MD, MANUAL_PAGES, minimal_pdf


def _source(name: str, data: bytes, kind: str) -> SourceFile:
    return SourceFile(name, Path(name), kind, data, "hash")  # type: ignore[arg-type]


def test_markdown_heading_paths_front_matter_and_code_fences() -> None:
    text = INSTALL_MD + (
        "\n```bash\n# not a heading, a shell comment\nquokka --version\n```\n\n"
        "Tuning\n------\n\nSet `workers` to the number of cores.\n\n### Deep\n\nDetail.\n"
    )
    document = parse_document(_source("install.md", text.encode(), "markdown"))
    assert document.tags == ["linux", "setup"]
    headings = [section.heading for section in document.sections]
    assert headings == [
        "Installing Quokka",
        "Installing Quokka > From the package repository",
        "Installing Quokka > Firewall ports",
        "Installing Quokka > Tuning",
        "Installing Quokka > Tuning > Deep",
    ]
    firewall = document.sections[2].text
    assert "# not a heading, a shell comment" in firewall  # the fence kept it as text
    assert "title: Installing Quokka" not in " ".join(s.text for s in document.sections)


def test_html_sections_tags_and_reading_order() -> None:
    document = parse_document(_source("api.html", API_HTML.encode(), "html"))
    assert document.tags == ["api", "reference"]
    assert [s.heading for s in document.sections] == [
        "REST API",
        "REST API > Rate limits",
        "REST API > Pagination",
    ]
    assert document.sections[0].text == (
        "All endpoints live under /api/v2 and need a bearer token."
    )
    assert "600 requests per minute" in document.sections[1].text
    assert "Use the cursor parameter." in document.sections[2].text
    assert all("tracking" not in s.text for s in document.sections)


DOCBOOK_HTML = """<html><body>
<table class="nav" width="100%"><tr><td><a href="prev.html">Prev</a></td>
<td>Valgrind User Manual</td><td><a href="next.html">Next</a></td></tr></table>
<nav><ul><li>Home</li><li>Downloads</li></ul></nav>
<div class="chapter"><h1>Memcheck</h1>
<div class="toc"><p>Table of Contents</p><dl><dt>4.1. Overview</dt></dl></div>
<p>Memcheck is a memory error detector.</p>
<pre class="programlisting">int main(void)
{
    int *x = malloc(10);
    return x[10];
}</pre>
<div role="navigation"><a href="index.html">Up</a></div>
</div></body></html>"""


def test_html_drops_site_chrome_and_keeps_code_blocks_as_written() -> None:
    document = parse_document(_source("mc.html", DOCBOOK_HTML.encode(), "html"))
    text = "\n".join(s.text for s in document.sections)
    for chrome in ("Prev", "Next", "Downloads", "Table of Contents", "4.1. Overview", "Up"):
        assert chrome not in text.split(), chrome
    assert [s.heading for s in document.sections] == ["Memcheck"]
    assert document.sections[0].text == (
        "Memcheck is a memory error detector.\n\n"
        "int main(void)\n{\n    int *x = malloc(10);\n    return x[10];\n}"
    )


LANDMARK_HTML = """<html><body><div id="column1">
<header><h1>Node.js v20 documentation</h1><ul><li>Assertion testing</li><li>Zlib</li></ul>
</header>
<div id="apicontent"><h2>DNS</h2><p>The dns module enables name resolution.</p>
<article><header><h3>dns.lookup()</h3></header><p>Resolves a hostname.</p>
<footer>Added in v0.1.90</footer></article></div>
<footer>Copyright OpenJS Foundation</footer></div></body></html>"""


def test_html_drops_page_level_header_and_footer_but_not_an_articles_own() -> None:
    document = parse_document(_source("dns.html", LANDMARK_HTML.encode(), "html"))
    text = "\n".join(s.text for s in document.sections)
    headings = [s.heading for s in document.sections]
    assert "Zlib" not in text and "Copyright" not in text
    assert not any("Node.js v20 documentation" in h for h in headings)
    assert headings == ["DNS", "DNS > dns.lookup()"]
    assert document.sections[1].text == "Resolves a hostname.\n\nAdded in v0.1.90"


def test_pdf_pages_become_sections() -> None:
    document = parse_document(_source("manual.pdf", minimal_pdf(MANUAL_PAGES), "pdf"))
    assert [s.heading for s in document.sections] == ["page 1", "page 2"]
    assert [s.text for s in document.sections] == MANUAL_PAGES


def test_corrupt_pdf_is_a_loader_error() -> None:
    with pytest.raises(LoaderError, match="PDF"):
        parse_document(_source("bad.pdf", b"%PDF-1.4\nthis is not really a pdf", "pdf"))
    with pytest.raises(LoaderError, match="no %PDF header"):
        parse_document(_source("fake.pdf", b"just text", "pdf"))


def test_plain_text_is_one_section() -> None:
    document = parse_document(_source("a.txt", b"line one\r\n\r\n\r\n\r\nline two\n", "text"))
    assert [(s.heading, s.text) for s in document.sections] == [("", "line one\n\nline two")]


def test_scan_reports_each_bad_file_and_keeps_the_good_ones(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "good.md").write_text("# Good\n\nFine text.\n")
    (tmp_path / "sub" / "notes.txt").write_text("plain notes")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (tmp_path / "empty.md").write_text("  \n\n")
    (tmp_path / "blob.txt").write_bytes(b"abc\x00\x01\x02def")
    (tmp_path / "huge.md").write_text("word " * 400)
    (tmp_path / "dangling.md").symlink_to(tmp_path / "missing-target.md")
    (tmp_path / ".hidden.md").write_text("secret")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config.txt").write_text("ignored")

    found, skipped = scan_folder(tmp_path, max_bytes=1000)

    assert [f.doc_id for f in found] == ["good.md", "sub/notes.txt"]
    reasons = {s.doc_id: s for s in skipped}
    assert set(reasons) == {"image.png", "empty.md", "blob.txt", "huge.md", "dangling.md"}
    assert reasons["image.png"].reason == "unsupported file type .png"
    assert reasons["empty.md"].reason == "empty file"
    assert reasons["blob.txt"].reason == "binary content in a text file"
    assert reasons["huge.md"].reason.startswith("too large (0.0 MB > 0.0 MB limit")
    assert reasons["dangling.md"].reason.startswith("unreadable: ")
    assert reasons["dangling.md"].transient and not reasons["huge.md"].transient
    assert found[0].content_hash == hashlib.sha256(b"# Good\n\nFine text.\n").hexdigest()


def test_html_hash_carries_the_parser_version(monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"<p>same bytes</p>"
    before = content_hash(data, "html")
    assert before != content_hash(data) and content_hash(data, "markdown") == content_hash(data)
    monkeypatch.setitem(PARSER_VERSIONS, "html", "html-next")
    assert content_hash(data, "html") != before


def test_non_utf8_text_is_rejected() -> None:
    with pytest.raises(LoaderError, match="not UTF-8"):
        parse_document(_source("x.txt", bytes(range(128, 256)) * 4, "text"))
