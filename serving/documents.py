"""Each domain's documents on disk: the folder a re-index reads, filled over HTTP."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import BinaryIO

from serving.files import atomic_write
from serving.paths import UnsafePathError, relative_parts, resolve_under


class DocumentTooLargeError(ValueError):
    """An uploaded document is over the upload limit."""


class DocumentStore:
    """`<root>/<domain>/<relative path>`; every client path is confined to its domain folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def folder(self, domain: str) -> Path:
        return self.root / domain

    def list(self, domain: str) -> list[tuple[str, int]]:
        """(relative path, size) of every document of `domain`, sorted."""
        folder = self.folder(domain)
        if not folder.is_dir():
            return []
        return sorted(
            (path.relative_to(folder).as_posix(), path.stat().st_size)
            for path in folder.rglob("*")
            if path.is_file() and not path.name.startswith(".upload-")
        )

    def count(self, domain: str) -> int:
        return len(self.list(domain))

    def save(
        self, domain: str, relative: str, data: BinaryIO, max_bytes: int
    ) -> tuple[str, int, str]:
        """Write `data` to `relative` (atomically); returns (path, size, sha256). Blocking."""
        parts = relative_parts(relative)
        folder = self.folder(domain)
        folder.mkdir(parents=True, exist_ok=True)
        target = resolve_under(folder, "/".join(parts), must_exist=False)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Re-check after creating parents: a symlinked parent could point elsewhere.
        target = resolve_under(folder, "/".join(parts), must_exist=False)
        if target.is_dir():
            raise UnsafePathError(f"{relative!r}: is a folder")
        digest = hashlib.sha256()
        size = 0
        with atomic_write(target, "wb", prefix=".upload-", suffix=".partial") as out:
            while block := data.read(1 << 20):
                size += len(block)
                if size > max_bytes:
                    raise DocumentTooLargeError(
                        f"{relative!r}: larger than the upload limit of {max_bytes} bytes "
                        "(serving.limits.max_upload_bytes)"
                    )
                digest.update(block)
                out.write(block)
        return "/".join(parts), size, digest.hexdigest()

    def delete(self, domain: str, relative: str) -> None:
        """Remove one document; FileNotFoundError when there is none. Blocking."""
        path = resolve_under(self.folder(domain), relative)
        if not path.is_file():
            raise FileNotFoundError(relative)
        path.unlink()

    def purge(self, domain: str) -> None:
        shutil.rmtree(self.folder(domain), ignore_errors=True)
