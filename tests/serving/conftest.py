"""Fixtures of the server tests: a tiny model, adapters under an adapters root, documents,
settings, and a way to run a uvicorn server on 127.0.0.1 (a free port) in a background
event loop. Names carry a `srv_` prefix so they never shadow the engine tests' fixtures.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from contracts.manifest import MANIFEST_FILE
from retrieval.settings import QdrantSettings, RetrievalSettings
from serving.engine.settings import EngineSettings
from serving.settings import ApiKey, ServingSettings
from tests.support.adapters import make_random_adapter
from tests.support.loop import LoopThread
from tests.support.tiny_models import build_tiny_model

T = TypeVar("T")

CHAT_KEY = "chat-key-0123456789"
ADMIN_KEY = "admin-key-0123456789"

DOCUMENTS = {
    "refunds.md": "# Refunds\n\n## Window\n\nRefunds are issued within 14 days of purchase "
    "when the product is returned unused.\n\n## Method\n\nRefunds go back to the original "
    "payment card; store credit is never forced.\n",
    "shipping.md": "# Shipping\n\nStandard shipping takes five business days. Express "
    "shipping takes one day and costs 12 euros.\n",
    "warranty/policy.md": "# Warranty\n\nEvery blue product carries a two year warranty "
    "covering manufacturing defects.\n",
}


@pytest.fixture(scope="session")
def srv_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama the server tests serve."""
    return build_tiny_model(tmp_path_factory.mktemp("srv-model") / "tiny-llama")


def _edit_manifest(folder: Path, **changes: Any) -> None:
    path = folder / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


@pytest.fixture(scope="session")
def srv_adapters_root(srv_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An adapters root with good adapters and each kind of bad one.

    acme/v1, acme/v2, other: good random adapters (different greedy outputs);
    no-manifest: a PEFT adapter without `lorag-adapter.json`;
    foreign: a manifest pinning another base model's fingerprint;
    old-format: a manifest with another prompt format;
    escape: a symlink to a good adapter outside the root.
    """
    root = tmp_path_factory.mktemp("srv-adapters")
    make_random_adapter(srv_model, root / "acme" / "v1", seed=11, name="acme")
    make_random_adapter(srv_model, root / "acme" / "v2", seed=12, name="acme")
    make_random_adapter(srv_model, root / "other", seed=13, name="other")
    shutil.copytree(root / "other", root / "no-manifest")
    (root / "no-manifest" / MANIFEST_FILE).unlink()
    shutil.copytree(root / "other", root / "foreign")
    _edit_manifest(root / "foreign", base_fingerprint="0" * 64, base_model="someone/else")
    shutil.copytree(root / "other", root / "old-format")
    _edit_manifest(root / "old-format", prompt_format="lorag-rag-v0")
    outside = tmp_path_factory.mktemp("srv-outside")
    shutil.copytree(root / "other", outside / "stolen")
    (root / "escape").symlink_to(outside / "stolen", target_is_directory=True)
    return root


@pytest.fixture(scope="session")
def srv_documents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return {path: text.encode() for path, text in DOCUMENTS.items()}


def serving_settings(
    adapters_root: Path, data_dir: Path, *, keys: bool = True, **changes: Any
) -> ServingSettings:
    """Settings for a test server (small engine, two API keys unless `keys=False`)."""
    api_keys = (
        [
            ApiKey(key=CHAT_KEY, scopes=["chat"], name="tester"),
            ApiKey(key=ADMIN_KEY, scopes=["admin"], name="operator"),
        ]
        if keys
        else []
    )
    values: dict[str, Any] = {
        "api_keys": api_keys,
        "adapters_root": adapters_root,
        "data_dir": data_dir,
        "sync_interval_s": 0.5,
        "engine": EngineSettings(
            max_adapters=4, max_lora_rank=8, max_model_len=1024, kv_cache_gib=0.25
        ),
    }
    values.update(changes)
    return ServingSettings(**values)


def retrieval_settings(qdrant_dir: Path) -> RetrievalSettings:
    return RetrievalSettings(qdrant=QdrantSettings(path=qdrant_dir), k=3)


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


def chat_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {CHAT_KEY}"}


ADMIN = admin_headers()  # admin implies chat: every route is reachable
CHAT = chat_headers()


def wait_for_job(client: httpx.Client, job_id: str, timeout_s: float = 180) -> dict:
    """Poll a job until it finishes (bounded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/admin/jobs/{job_id}", headers=admin_headers()).json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} did not finish within {timeout_s} s")


@pytest.fixture(scope="session")
def srv_loop() -> Iterator[LoopThread]:
    runner = LoopThread()
    yield runner
    runner.close()
