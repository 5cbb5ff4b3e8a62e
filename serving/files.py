"""Atomic file replacement: what the state, feedback and document stores write with."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal


@contextlib.contextmanager
def atomic_write(
    path: Path, mode: Literal["w", "wb"] = "w", prefix: str | None = None, suffix: str = ""
) -> Iterator[IO[Any]]:
    """A temporary file next to `path`, synced and renamed over it when the block succeeds.

    Readers see the old file or the new one, never half of one; on any error (or a
    cancellation) the temporary file is removed and `path` is left as it was. The
    temporary name is `<prefix><random><suffix>` (default prefix: `.<name>-`).
    """
    path = Path(path)
    handle, temp = tempfile.mkstemp(
        prefix=prefix if prefix is not None else f".{path.name}-", suffix=suffix, dir=path.parent
    )
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(handle, mode, encoding=encoding) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
