"""Confined paths and the shared state stores (JSON file; Qdrant through qdrant-client)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from qdrant_client import QdrantClient

from retrieval.store import DOMAIN_PATTERN
from serving.paths import UnsafePathError, resolve_under
from serving.settings import DOMAIN_PATTERN as SERVING_DOMAIN_PATTERN
from serving.state import (
    AdapterRecord,
    DomainRecord,
    FileStateStore,
    QdrantStateStore,
    ServingState,
    StateStoreError,
)


def test_domain_names_follow_retrieval_rule() -> None:
    assert SERVING_DOMAIN_PATTERN == DOMAIN_PATTERN.pattern


@pytest.mark.parametrize(
    "relative", ["../x", "a/../../x", "/etc/passwd", "", "a\\..\\b", "a/\x00", "."]
)
def test_resolve_under_refuses_escapes(tmp_path: Path, relative: str) -> None:
    (tmp_path / "a").mkdir()
    with pytest.raises(UnsafePathError):
        resolve_under(tmp_path, relative, must_exist=False)


def test_resolve_under_refuses_symlink_escape(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "inside").mkdir()
    with pytest.raises(UnsafePathError, match="outside"):
        resolve_under(root, "link")
    assert resolve_under(root, "./inside") == (root / "inside").resolve()
    with pytest.raises(FileNotFoundError):
        resolve_under(root, "missing")


def _sample_state(state: ServingState) -> None:
    state.domains["acme"] = DomainRecord(name="acme", adapter="acme", index=True, k=4)
    state.adapters["acme"] = AdapterRecord(name="acme", version=2, path="acme/v2")
    state.adapter_versions["acme"] = 2


def test_file_store_round_trip_and_atomic_updates(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path / "state.json")
    assert store.read() == ServingState()
    store.update(_sample_state)
    again = FileStateStore(tmp_path / "state.json").read()
    assert again.domains["acme"].k == 4
    assert again.adapters["acme"].path == "acme/v2"

    # Concurrent read-modify-writes from several threads lose nothing (file lock).
    def bump(state: ServingState) -> None:
        state.adapter_versions["n"] = state.adapter_versions.get("n", 0) + 1

    threads = [
        threading.Thread(target=lambda: [store.update(bump) for _ in range(10)]) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert store.read().adapter_versions["n"] == 40
    assert not list(tmp_path.glob(".state-*"))  # no temp file left behind


def test_file_store_reports_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with pytest.raises(StateStoreError, match="state.json"):
        FileStateStore(path).read()
    assert path.read_text() == "{not json"  # left as it was


def test_qdrant_store_round_trip_and_per_entity_writes() -> None:
    client = QdrantClient(location=":memory:")
    store = QdrantStateStore(client, "lorag_state_test")
    assert store.read() == ServingState()
    store.update(_sample_state)
    other = QdrantStateStore(client, "lorag_state_test")  # another replica, same collection
    state = other.read()
    assert state.domains["acme"].adapter == "acme"
    assert state.adapters["acme"].version == 2
    # Each replica's change writes only the entities it touched.
    store.update(lambda s: s.domains.update(beta=DomainRecord(name="beta")))
    other.update(lambda s: s.domains["acme"].__setattr__("k", 7))
    final = store.read()
    assert final.domains.keys() == {"acme", "beta"}
    assert final.domains["acme"].k == 7
    store.update(lambda s: s.adapters.pop("acme"))
    assert other.read().adapters == {}
    assert other.read().adapter_versions == {"acme": 2}
    client.close()
