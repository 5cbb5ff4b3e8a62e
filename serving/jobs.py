"""Background jobs (re-indexing a domain), with a status a client can poll."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from serving.protocol import JobInfo

log = logging.getLogger("lorag.serving")

_KEEP_FINISHED = 200


class JobConflictError(RuntimeError):
    """A job of the same kind is already running for the domain."""


class JobCancelledError(RuntimeError):
    """Raised inside a job's work when the server shuts down (see `JobManager.close`)."""


Work = Callable[[threading.Event], Awaitable[dict[str, Any]]]


class JobManager:
    """Runs each job as an asyncio task; one job per (kind, domain) at a time.

    A job's work gets a `threading.Event` that is set at shutdown: work running in a worker
    thread checks it and stops early (by raising), since a thread cannot be cancelled.
    """

    def __init__(self, on_finished: Callable[[JobInfo], None] | None = None) -> None:
        self._jobs: dict[str, JobInfo] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._cancel = threading.Event()
        self._on_finished = on_finished

    def get(self, job_id: str) -> JobInfo | None:
        return self._jobs.get(job_id)

    def list(self) -> list[JobInfo]:
        return sorted(self._jobs.values(), key=lambda job: job.created_at, reverse=True)

    def start(self, kind: str, domain: str, work: Work) -> JobInfo:
        """Start `work` in the background and return its job (status `queued`)."""
        for job in self._jobs.values():
            if job.kind == kind and job.domain == domain and job.status in ("queued", "running"):
                raise JobConflictError(
                    f"a {kind} job for domain {domain!r} is already {job.status} (job {job.id})"
                )
        job = JobInfo(
            id=f"job-{uuid.uuid4().hex[:16]}",
            kind=kind,
            domain=domain,
            status="queued",
            created_at=time.time(),
        )
        self._jobs[job.id] = job
        self._tasks[job.id] = asyncio.get_running_loop().create_task(self._run(job, work))
        self._forget_old()
        return job

    async def _run(self, job: JobInfo, work: Work) -> None:
        job.status, job.started_at = "running", time.time()
        try:
            job.result = await work(self._cancel)
            job.status = "succeeded"
        except (asyncio.CancelledError, JobCancelledError):
            job.status, job.error = "failed", "cancelled: the server shut down"
            if not self._cancel.is_set():
                raise
        except Exception as err:  # noqa: BLE001 - a job failure is reported, not raised
            log.warning("job %s (%s %s) failed: %s", job.id, job.kind, job.domain, err)
            job.status, job.error = "failed", f"{type(err).__name__}: {err}"
        finally:
            job.finished_at = time.time()
            self._tasks.pop(job.id, None)
            if self._on_finished:
                self._on_finished(job)

    def _forget_old(self) -> None:
        finished = [j for j in self.list() if j.status in ("succeeded", "failed")]
        for job in finished[_KEEP_FINISHED:]:
            self._jobs.pop(job.id, None)

    async def close(self, timeout_s: float = 60) -> None:
        """Stop running jobs: signal them, wait (bounded) for their threads, then cancel.

        A re-index stopped part-way leaves the previous index serving (a rebuild switches
        at its end) and is resumed by the next re-index."""
        self._cancel.set()
        tasks = list(self._tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
