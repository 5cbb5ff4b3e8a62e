"""`lorag serve` as a user runs it: a subprocess that creates its own vLLM engine from the
config, answers the openai client, logs an audit line per request and stops on SIGTERM."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from lorag.commands.serving import serve_argv
from serving.process import ServerProcess, free_port
from tests.serving.conftest import ADMIN_KEY, CHAT_KEY, admin_headers

pytestmark = pytest.mark.vllm


def test_lorag_serve_end_to_end(srv_model: Path, srv_adapters_root: Path, tmp_path: Path) -> None:
    port = free_port()
    config = {
        "retrieval": {"qdrant": {"path": str(tmp_path / "qdrant")}},
        "serving": {
            "port": port,
            "adapters_root": str(srv_adapters_root),
            "data_dir": str(tmp_path / "data"),
            "api_keys": [
                {"key": CHAT_KEY, "scopes": ["chat"], "name": "tester"},
                {"key": ADMIN_KEY, "scopes": ["admin"]},
            ],
            "engine": {"max_adapters": 2, "max_lora_rank": 8, "max_model_len": 512},
            "domains": {"acme": {"adapter": "acme", "system_prompt": "Be brief."}},
            "adapters": {"acme": "acme/v1"},
        },
    }
    config_file = tmp_path / "lorag.yaml"
    config_file.write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{port}"
    server = ServerProcess(
        serve_argv(config_file, srv_model), tmp_path / "server.log", url, cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
        defaults={"VLLM_CPU_KVCACHE_SPACE": "1"},
    ).start()
    try:
        server.wait_ready(400)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=CHAT_KEY, max_retries=0)
        reply = client.chat.completions.create(
            model="acme", messages=[{"role": "user", "content": "hello"}], max_tokens=8
        )
        assert reply.model_extra["lorag"]["adapter"] == "acme"
        assert reply.model_extra["lorag"]["adapter_version"] == 1
        assert reply.usage.completion_tokens > 0
        swapped = httpx.post(
            f"{url}/admin/adapters",
            headers=admin_headers(),
            json={"name": "acme", "path": "acme/v2"},
        )
        assert swapped.status_code == 200 and swapped.json()["version"] == 2
    finally:
        code, left = server.stop()
    # uvicorn shuts down gracefully, then re-raises the signal it caught (exit by SIGTERM).
    log = server.log_file.read_text()
    assert code in (0, -signal.SIGTERM) and left == [], server.log_tail()
    assert "Application shutdown complete" in log
    # The audit lines (stdout) are JSON objects; uvicorn's own lines (stderr) are not.
    audit = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    line = next(item for item in audit if item["request_id"] == reply.id)
    assert (line["domain"], line["adapter"], line["adapter_version"]) == ("acme", "acme", 1)
    assert line["api_key"] == "tester"
    # The state outlives the process: the swap is stored.
    state = json.loads((tmp_path / "data" / "state.json").read_text())
    assert state["adapters"]["acme"]["version"] == 2
