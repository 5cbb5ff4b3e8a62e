"""Client-given paths, confined to a root folder: no absolute paths, no `..`, no symlink escape."""

from __future__ import annotations

from pathlib import Path, PurePosixPath


class UnsafePathError(ValueError):
    """A client-given path points outside the folder it must stay in."""


def relative_parts(relative: str) -> tuple[str, ...]:
    """The parts of a client-given relative POSIX path, refusing anything that could escape."""
    if not relative or not relative.strip():
        raise UnsafePathError("the path is empty")
    if "\\" in relative or "\x00" in relative:
        raise UnsafePathError(f"{relative!r}: backslashes and NUL bytes are not allowed")
    path = PurePosixPath(relative)
    if path.is_absolute():
        raise UnsafePathError(f"{relative!r}: must be a relative path")
    parts = tuple(part for part in path.parts if part != ".")
    if any(part == ".." for part in parts):
        raise UnsafePathError(f"{relative!r}: '..' is not allowed")
    if not parts:
        raise UnsafePathError(f"{relative!r}: names no file or folder")
    return parts


def resolve_under(root: Path, relative: str, *, must_exist: bool = True) -> Path:
    """`root/relative`, resolved (symlinks followed), and checked to still lie under `root`."""
    root = Path(root).resolve()
    candidate = root.joinpath(*relative_parts(relative))
    resolved = candidate.resolve(strict=must_exist) if must_exist else candidate.resolve()
    if not resolved.is_relative_to(root) or resolved == root:
        raise UnsafePathError(f"{relative!r}: resolves outside {root}")
    return resolved
