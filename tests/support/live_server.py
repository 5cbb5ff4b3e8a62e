"""An ASGI app served by uvicorn on a free port of 127.0.0.1, in a background event loop,
for tests that talk to it over real HTTP (the in-process counterpart of
`serving.process.ServerProcess`)."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import httpx
import uvicorn

from tests.support.loop import LoopThread


class RunningServer:
    """uvicorn serving `app` until `stop()`, on `loop` (or a loop of its own).

    Returns once uvicorn has started (the app's lifespan included) and, with `ready_path`,
    once that path answers 200.
    """

    def __init__(
        self,
        loop: LoopThread | None,
        app: Any,
        ready_path: str | None = None,
        start_timeout_s: float = 240,
    ) -> None:
        self._own_loop = loop is None
        self._loop = loop or LoopThread()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._sock = sock
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = app
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=20)
        self.server = uvicorn.Server(config)
        self._done = asyncio.run_coroutine_threadsafe(
            self.server.serve(sockets=[sock]), self._loop.loop
        )
        try:
            self._wait(time.monotonic() + start_timeout_s, ready_path)
        except BaseException:
            self.stop()
            raise

    def _wait(self, deadline: float, ready_path: str | None) -> None:
        while True:
            if self._done.done():
                self._done.result()  # raises the start-up error
                raise RuntimeError("the server stopped during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server at {self.url} was not ready in time")
            if self.server.started and (ready_path is None or self._answers(ready_path)):
                return
            time.sleep(0.05)

    def _answers(self, path: str) -> bool:
        try:
            return httpx.get(self.url + path, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        self.server.should_exit = True
        try:
            self._done.result(timeout=60)
        finally:
            self._sock.close()
            if self._own_loop:
                self._loop.close()
