"""Atomic replacement: a failed write leaves the old file and no temporary file."""

from __future__ import annotations

import pytest

from serving.files import atomic_write


def test_a_write_replaces_the_file_and_a_failed_one_leaves_it_untouched(tmp_path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    with atomic_write(target) as out:
        out.write("new")
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError), atomic_write(target, "wb", prefix=".x-") as out:
        out.write(b"half")
        raise RuntimeError("disk went away")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
