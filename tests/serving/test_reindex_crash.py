"""A `lorag serve` SIGKILLed in the middle of a re-index job over HTTP: the previous index is
searchable on reopen, and a re-index after the restart completes it with no duplicates and
no lost documents.

The real thing: a `lorag serve` subprocess (the transformers engine on a tiny model, so that
it starts in seconds; the engine plays no part in indexing) with the embedded Qdrant engine
and all-MiniLM-L6-v2. The process kills itself with SIGKILL (no `finally`, no flush, no
close) on the second store write after the test arms the tripwire.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import httpx
import yaml

from retrieval import Retriever
from retrieval.settings import RetrievalSettings
from serving.process import ServerProcess, free_port, group_members
from tests.retrieval.test_incremental import _assert_consistent
from tests.serving.conftest import ADMIN, ADMIN_KEY, CHAT_KEY, DOCUMENTS, wait_for_job
from tests.support.tiny_models import build_tiny_model

# `lorag serve` whose EdgeStore.upsert SIGKILLs the process on its 2nd call once ARM exists.
DRIVER = """
import os, signal, sys
from retrieval.store_edge import EdgeStore
arm, original, calls = os.environ["LORAG_TEST_ARM"], EdgeStore.upsert, []
def tripwire(self, *args, **kwargs):
    if os.path.exists(arm):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    return original(self, *args, **kwargs)
EdgeStore.upsert = tripwire
sys.argv = ["lorag", *sys.argv[1:]]
from lorag.cli import main
main()
"""

EXTRA = {  # the second job's new documents: enough chunks for several store writes
    f"guides/topic-{n}.md": (
        f"# Topic {n}\n\n"
        + "\n\n".join(
            f"Paragraph {p} of topic {n}: the quokka gateway {n}-{p} keeps its settings in "
            f"section {p} and restarts within {n + p} seconds after an update."
            for p in range(12)
        )
    ).encode()
    for n in range(6)
}


def _start(tmp: Path, model: Path, port: int, arm: Path) -> ServerProcess:
    argv = [
        sys.executable, "-c", DRIVER, "--config", str(tmp / "lorag.yaml"),
        "serve", "--base-model", str(model),
    ]  # fmt: skip
    log, url = tmp / f"server-{port}.log", f"http://127.0.0.1:{port}"
    return ServerProcess(argv, log, url, env={"LORAG_TEST_ARM": str(arm)}).start()


def _upload(http: httpx.Client, documents: dict[str, bytes]) -> None:
    for path, data in documents.items():
        response = http.post(
            "/admin/domains/acme/documents",
            headers=ADMIN,
            files={"file": (Path(path).name, data)},
            data={"path": path},
        )
        assert response.status_code == 201, response.text


def _reindex(http: httpx.Client) -> dict:
    job = http.post("/admin/domains/acme/reindex", headers=ADMIN)
    assert job.status_code == 202, job.text
    return wait_for_job(http, job.json()["id"], timeout_s=300)


def test_server_killed_during_a_reindex_job(tmp_path: Path) -> None:
    model = build_tiny_model(tmp_path / "tiny")
    qdrant = tmp_path / "qdrant"
    config = {
        "serving": {
            "data_dir": str(tmp_path / "serving"),
            "adapters_root": str(tmp_path / "adapters"),
            "api_keys": [
                {"key": CHAT_KEY, "scopes": ["chat"], "name": "tester"},
                {"key": ADMIN_KEY, "scopes": ["admin"], "name": "operator"},
            ],
            "engine": {"kind": "transformers", "max_model_len": 512},
        },
        "retrieval": {
            "qdrant": {"path": str(qdrant)},
            "embedding": {"chunks_per_step": 4},  # many small writes
        },
    }
    arm = tmp_path / "armed"
    ports = [free_port(), free_port()]
    servers = []
    try:
        for number, port in enumerate(ports):
            config["serving"]["port"] = port
            (tmp_path / "lorag.yaml").write_text(yaml.safe_dump(config))
            server = _start(tmp_path, model, port, arm)
            servers.append(server)
            server.wait_ready(300)
            with httpx.Client(base_url=server.url, timeout=120) as http:
                if number == 0:
                    created = http.post(
                        "/admin/domains", headers=ADMIN, json={"name": "acme", "index": True}
                    )
                    assert created.status_code == 201, created.text
                    _upload(http, DOCUMENTS)
                    assert _reindex(http)["status"] == "succeeded"
                    _upload(http, EXTRA)
                    arm.touch()
                    http.post("/admin/domains/acme/reindex", headers=ADMIN)
                    assert server.process.wait(timeout=300) == -signal.SIGKILL
                    arm.unlink()
                    # Reopened: the previous index, whole and searchable.
                    settings = RetrievalSettings(qdrant={"path": str(qdrant)})
                    with Retriever(settings) as retriever:
                        _assert_consistent(retriever, set(DOCUMENTS), "acme")
                        hits = retriever.search("acme", "How many days for a refund?", k=3)
                        assert hits and hits[0].doc_id == "refunds.md"
                else:  # restarted on the same folders: a re-index completes the job
                    assert _reindex(http)["status"] == "succeeded"
                    response = http.post(
                        "/v1/search",
                        headers=ADMIN,
                        json={"domain": "acme", "query": "quokka gateway 3-7 settings", "k": 1},
                    )
                    assert response.status_code == 200, response.text
            if number == 1:
                server.stop()
        with Retriever(RetrievalSettings(qdrant={"path": str(qdrant)})) as retriever:
            _assert_consistent(retriever, set(DOCUMENTS) | set(EXTRA), "acme")
    finally:
        for server in servers:
            if server.process.poll() is None:
                server.stop()
            if group_members(server.process.pid):
                os.killpg(server.process.pid, signal.SIGKILL)
