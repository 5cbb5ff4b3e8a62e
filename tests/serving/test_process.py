"""`serving.process`: a server subprocess started, polled and stopped with nothing left."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from serving.process import ServerProcess, ServerStartError, engine_cpu_env, free_port

SERVE = (  # a static file server: GET /ready is the file `ready`
    "import http.server, sys; http.server.test(http.server.SimpleHTTPRequestHandler, "
    "port=int(sys.argv[1]), bind='127.0.0.1')"
)


def test_small_machines_give_the_vllm_worker_every_core() -> None:
    assert engine_cpu_env({0, 1}) == {
        "VLLM_CPU_OMP_THREADS_BIND": "0,1",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    }
    assert engine_cpu_env({3, 2})["VLLM_CPU_OMP_THREADS_BIND"] == "2,3"
    assert engine_cpu_env(set(range(8))) == {}  # vLLM's own binding on larger machines


def test_a_server_is_polled_until_ready_and_stopped_whole(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "ready").write_text('{"ready": true}')
    server = ServerProcess(
        [sys.executable, "-c", SERVE, str(port)], tmp_path / "log", f"http://127.0.0.1:{port}",
        cwd=tmp_path,
    ).start()
    try:
        assert server.wait_ready(30) == {"ready": True}
    finally:
        code, left = server.stop(timeout_s=10)
    assert code is not None and left == []


def test_an_early_exit_names_the_log(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "print('boom'); raise SystemExit(3)"]
    server = ServerProcess(command, tmp_path / "log", "http://127.0.0.1:9").start()
    with pytest.raises(ServerStartError, match=r"code 3 during start-up(.|\n)*boom"):
        server.wait_ready(30)
    assert server.stop() == (3, [])
