"""A small corpus of documents with one distinctive topic each, and a minimal PDF writer."""

from __future__ import annotations

from pathlib import Path

INSTALL_MD = """---
title: Installing Quokka
tags: [setup, linux]
---
# Installing Quokka

Quokka runs on any 64-bit Linux with glibc 2.31 or newer.

## From the package repository

Add the signing key, then run `apt install quokka-server`. The package creates the
quokka system user and a systemd unit.

## Firewall ports

Open TCP port 7443 for the web console and UDP port 5353 for discovery.
"""

BACKUP_MD = """---
tags: maintenance
---
# Backups

## Snapshot schedule

Quokka writes an encrypted snapshot of the ledger every night at 02:00 to the
bucket configured as `backup.target`. Snapshots are kept for 35 days.

## Restoring a snapshot

Stop the service, run `quokka restore --snapshot ID`, then start it again.
"""

GLOSSARY_TXT = """Glossary of Quokka terms.

Ledger: the append-only journal where every balance change is recorded.
Pouch: a named group of accounts that share one spending limit.
Hop: a transfer between two pouches that settles instantly.
"""

API_HTML = """<!doctype html>
<html><head><title>Quokka REST API</title>
<meta name="keywords" content="api, reference">
<script>var tracking = "ignore me";</script></head>
<body>
<h1>REST API</h1>
<p>All endpoints live under <code>/api/v2</code> and need a bearer token.</p>
<h2>Rate limits</h2>
<p>Each token may send <b>600 requests per minute</b>; extra requests get HTTP 429.</p>
<h2>Pagination</h2>
<ul><li>Use the <a href="#cursor">cursor</a> parameter.</li><li>Pages hold 100 items.</li></ul>
</body></html>
"""

MANUAL_PAGES = [
    "Hardware manual. The Quokka appliance draws 45 watts at full load.",
    "Cooling. Keep two centimetres of clearance around the fan vents of the appliance.",
]

DOCS: dict[str, str] = {
    "guides/install.md": INSTALL_MD,
    "guides/backup.md": BACKUP_MD,
    "glossary.txt": GLOSSARY_TXT,
    "reference/api.html": API_HTML,
}

# A query per document that only that document answers.
QUERIES = {
    "guides/install.md": "which firewall port does the web console use",
    "guides/backup.md": "how long are nightly ledger snapshots kept",
    "glossary.txt": "what is a pouch",
    "reference/api.html": "how many requests per minute may a token send",
    "manual.pdf": "how much power does the appliance draw at full load",
}


def minimal_pdf(pages: list[str]) -> bytes:
    """A valid PDF with one line of Helvetica text per page (pypdf extracts it)."""

    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    objects: list[bytes] = []
    page_ids = [4 + 2 * i for i in range(len(pages))]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{pid} 0 R" for pid in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for number, text in enumerate(pages):
        content_id = page_ids[number] + 1
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content_id} 0 R "
            f"/Resources << /Font << /F1 3 0 R >> >> >>".encode()
        )
        stream = f"BT /F1 11 Tf 40 740 Td ({escape(text)}) Tj ET".encode()
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def write_files(root: Path) -> None:
    for name, text in DOCS.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "manual.pdf").write_bytes(minimal_pdf(MANUAL_PAGES))
