"""`lorag serve` stops when asked: SIGINT or SIGTERM, to the main process or to its whole
process group (Ctrl-C in a terminal, systemd's stop), ends it within 10 s with no process
left behind, with adapters loaded and a request running, and its state file intact.

The real thing: a `lorag serve` subprocess on the vLLM engine with two adapters.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from lorag.commands.serving import serve_argv
from serving.process import ServerProcess, free_port, group_members
from tests.support.adapters import make_random_adapter
from tests.support.tiny_models import build_tiny_model

pytestmark = pytest.mark.vllm
STOP_WITHIN_S = 10.0


@pytest.fixture(scope="module")
def served_model(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("shutdown")
    model = build_tiny_model(root / "tiny")
    for seed, name in ((41, "a"), (42, "b")):
        make_random_adapter(model, root / "adapters" / name, seed=seed, name=name)
    return model, root / "adapters"


@pytest.mark.parametrize(
    ("signum", "to_group"),
    [
        (signal.SIGINT, True),
        (signal.SIGTERM, True),
        (signal.SIGINT, False),
        (signal.SIGTERM, False),
    ],
    ids=["SIGINT-group", "SIGTERM-group", "SIGINT-main", "SIGTERM-main"],
)
def test_serve_stops_on_signals(served_model, tmp_path, signum, to_group) -> None:
    model, adapters = served_model
    port = free_port()
    config = {
        "serving": {
            "port": port,
            "data_dir": str(tmp_path / "serving"),
            "adapters_root": str(adapters),
            "adapters": {"a": "a", "b": "b"},
            "engine": {"max_adapters": 3, "max_lora_rank": 8, "max_model_len": 512,
                       "kv_cache_gib": 0.25, "max_num_seqs": 4},
        },
        "retrieval": {"qdrant": {"path": str(tmp_path / "qdrant")}},
    }
    (tmp_path / "lorag.yaml").write_text(yaml.safe_dump(config))
    server = ServerProcess(
        serve_argv(tmp_path / "lorag.yaml", model),
        tmp_path / "server.log",
        f"http://127.0.0.1:{port}",
    ).start()
    pgid = server.process.pid
    try:
        server.wait_ready(600)
        outcome: dict = {}

        def ask() -> None:  # a request in flight when the signal comes
            try:
                reply = httpx.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    json={"model": "a", "messages": [{"role": "user", "content": "hi"}],
                          "max_tokens": 400, "temperature": 1.0},
                    timeout=60,
                )
                outcome["status"] = reply.status_code
            except httpx.HTTPError as err:
                outcome["error"] = type(err).__name__

        client = threading.Thread(target=ask)
        client.start()
        time.sleep(0.5)
        sent = time.monotonic()
        (os.killpg if to_group else os.kill)(pgid, signum)
        server.process.wait(timeout=STOP_WITHIN_S + 5)
        while group_members(pgid) and time.monotonic() - sent < STOP_WITHIN_S:
            time.sleep(0.1)
        took = time.monotonic() - sent
        assert group_members(pgid) == [], server.log_tail()
        assert took <= STOP_WITHIN_S, (took, server.log_tail())
        client.join(timeout=30)
        # The request finished or was cut off; it never hung the client.
        assert outcome.get("status") in (200, 500, None) and not client.is_alive(), outcome
        state = json.loads((tmp_path / "serving" / "state.json").read_text())
        assert set(state["adapters"]) == {"a", "b"}
        assert "Application shutdown complete" in server.log_file.read_text()
    finally:
        if group_members(pgid):
            os.killpg(pgid, signal.SIGKILL)
