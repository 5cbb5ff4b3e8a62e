"""A whole (non-streaming) answer whose client goes away is aborted, not finished unseen.

The fake engine holds every generation mid-way, so the client gives up first; the real
vLLM engine's abort on the same cancellation is tested in tests/serving/test_server.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import pytest

from serving.app import create_app
from tests.serving.conftest import chat_headers, retrieval_settings, serving_settings
from tests.serving.fakes import FakeEngine
from tests.support.live_server import RunningServer


def _send_and_leave(port: int, path: str, body: dict) -> None:
    """Send a request, wait a moment for it to start, then close the connection unread."""
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"authorization: {chat_headers()['Authorization']}\r\ncontent-length: {len(data)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + data)
        time.sleep(0.5)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "base", "messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/completions", {"model": "base", "prompt": "Question: hi\nAnswer:", "max_tokens": 4}),
    ],
)
def test_a_client_that_leaves_aborts_its_generation(
    path: str, body: dict, srv_model: Path, srv_adapters_root: Path, srv_loop, tmp_path: Path
) -> None:
    engine = FakeEngine()
    engine.hold = asyncio.Event()  # never set: only a cancellation ends a generation
    data = tmp_path / "data"
    app = create_app(
        serving_settings(srv_adapters_root, data), retrieval_settings(data / "qdrant"), srv_model,
        engine=engine,
    )
    server = RunningServer(srv_loop, app)
    try:
        _send_and_leave(server.port, path, body)
        deadline = time.monotonic() + 10
        while not engine.cancelled and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(engine.cancelled) == 1 and engine.started_requests == 1
        metrics = app.state.ctx.metrics
        assert metrics.in_flight._value.get() == 0  # the lease and the gauge were released
    finally:
        server.stop()
