"""A real lorag server (serving.app.create_app + uvicorn) on 127.0.0.1 for the eval tests.

The app runs in its own event loop in a daemon thread, so the eval code under test can run
its own `asyncio.run` in the test's thread and talk to the server over real HTTP.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import httpx
import uvicorn


class BackgroundServer:
    """uvicorn serving `app` on a free loopback port until `stop()`; waits for /ready."""

    def __init__(self, app: Any, start_timeout_s: float = 600.0) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=20)
        self._server = uvicorn.Server(config)
        self._done = asyncio.run_coroutine_threadsafe(
            self._server.serve(sockets=[self._sock]), self._loop
        )
        try:
            self._wait_ready(start_timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._done.done():
                self._done.result()  # raises the start-up error
                raise RuntimeError("the server stopped during start-up")
            if self._server.started:
                try:
                    if httpx.get(f"{self.url}/ready", timeout=5).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        raise TimeoutError(f"the server at {self.url} was not ready within {timeout_s} s")

    def stop(self) -> None:
        self._server.should_exit = True
        try:
            self._done.result(timeout=60)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop.close()
            self._sock.close()
