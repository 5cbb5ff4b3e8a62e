"""Load test: N concurrent streaming clients against a server, bounded in requests and time.

Each client sends one streaming chat request at a time (`stream_options.include_usage` for
token counts) and starts a new one until the run reaches its request bound or its duration
bound; requests already running when the duration ends are allowed to finish (each is bounded
by the request timeout). Optionally an adapter is replaced every few seconds through
`POST /admin/adapters` while the clients run, to measure that swaps cost no failures.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from openai import AsyncOpenAI

from eval.client import check_model, describe_error, extension, server_root
from eval.metrics import percentile
from eval.report import Report, Table, histogram


@dataclass(frozen=True)
class Replacement:
    """`NAME=PATH`: load the adapter at PATH (under the server's adapters root) as NAME."""

    name: str
    path: str

    @classmethod
    def parse(cls, text: str) -> Replacement:
        name, sep, path = text.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ValueError(f"--replace-adapter {text!r}: expected NAME=PATH")
        return cls(name.strip(), path.strip())


@dataclass
class RequestRecord:
    client: int
    started_s: float  # since the start of the run
    latency_s: float
    ttft_s: float | None
    completion_tokens: int
    error: str | None = None
    finish_reason: str | None = None
    adapter_version: Any = None
    sources: int | None = None  # retrieved passages the server reported in the last chunk


@dataclass
class ReplacementRecord:
    name: str
    path: str
    started_s: float
    seconds: float
    status: int | None
    error: str | None = None
    response: Any = None


@dataclass
class LoadRun:
    model: str
    concurrency: int
    wall_s: float
    requests: list[RequestRecord] = field(default_factory=list)
    replacements: list[ReplacementRecord] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        ok = [r for r in self.requests if r.error is None]
        latencies = [r.latency_s for r in ok]
        ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
        tokens = sum(r.completion_tokens for r in ok)
        return {
            "requests": len(self.requests),
            "ok": len(ok),
            "errors": len(self.requests) - len(ok),
            "error_kinds": dict(Counter(r.error for r in self.requests if r.error)),
            "wall_s": self.wall_s,
            "requests_per_s": len(ok) / self.wall_s if self.wall_s else None,
            "output_tokens": tokens,
            "output_tokens_per_s": tokens / self.wall_s if self.wall_s else None,
            **{f"latency_p{q}_s": percentile(latencies, q) for q in (50, 95, 99)},
            **{f"ttft_p{q}_s": percentile(ttfts, q) for q in (50, 95, 99)},
            "replacements": len(self.replacements),
            "replacement_errors": sum(1 for r in self.replacements if r.error),
            "adapter_versions": dict(
                Counter(str(r.adapter_version) for r in ok if r.adapter_version is not None)
            ),
        }


async def stream_one(
    client: AsyncOpenAI,
    model: str,
    prompt: str,
    max_tokens: int,
    switches: dict[str, Any] | None,
    client_id: int,
    run_start: float,
) -> RequestRecord:
    """One streaming request, timed: latency to the last byte, time to the first token."""
    started = time.perf_counter()
    ttft = None
    pieces = 0
    usage_tokens = None
    finish = None
    version = None
    sources = None
    try:
        stream = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            temperature=0.0,
            max_tokens=max_tokens,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"lorag": switches} if switches else None,
        )
        async for chunk in stream:
            for choice in chunk.choices:
                if choice.delta and choice.delta.content:
                    pieces += 1
                    if ttft is None:
                        ttft = time.perf_counter() - started
                if choice.finish_reason:
                    finish = choice.finish_reason
                    meta = extension(chunk, "lorag") or {}
                    version = meta.get("adapter_version")
                    returned = extension(chunk, "sources")
                    sources = len(returned) if returned is not None else None
            if chunk.usage is not None:
                usage_tokens = chunk.usage.completion_tokens
    except Exception as err:  # noqa: BLE001 - every failure is counted, none stops the run
        return RequestRecord(
            client=client_id,
            started_s=started - run_start,
            latency_s=time.perf_counter() - started,
            ttft_s=ttft,
            completion_tokens=0,
            error=describe_error(err),
        )
    return RequestRecord(
        client=client_id,
        started_s=started - run_start,
        latency_s=time.perf_counter() - started,
        ttft_s=ttft,
        completion_tokens=usage_tokens if usage_tokens is not None else pieces,
        finish_reason=finish,
        adapter_version=version,
        sources=sources,
    )


async def post_replacement(
    http: httpx.AsyncClient, replacement: Replacement, headers: dict[str, str], run_start: float
) -> ReplacementRecord:
    """`POST /admin/adapters` for one replacement, timed; a failure is recorded, not raised."""
    started = time.perf_counter()
    record = ReplacementRecord(
        name=replacement.name,
        path=replacement.path,
        started_s=started - run_start,
        seconds=0.0,
        status=None,
    )
    try:
        response = await http.post(
            "/admin/adapters",
            json={"name": replacement.name, "path": replacement.path},
            headers=headers,
        )
        record.status = response.status_code
        try:
            record.response = response.json()
        except ValueError:
            record.response = response.text[:500]
        if response.status_code >= 400:
            record.error = f"HTTP {response.status_code}"
    except httpx.HTTPError as err:
        record.error = f"{type(err).__name__}: {err}"
    record.seconds = time.perf_counter() - started
    return record


def _admin_headers(admin_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_key}"} if admin_key else {}


async def replace_adapters(
    url: str,
    admin_key: str | None,
    replacements: Sequence[Replacement],
    every_s: float,
    stop: asyncio.Event,
    run_start: float,
    timeout_s: float,
) -> list[ReplacementRecord]:
    """Every `every_s` seconds until `stop`, load the next replacement (cycling the list)."""
    records: list[ReplacementRecord] = []
    headers = _admin_headers(admin_key)
    async with httpx.AsyncClient(base_url=server_root(url), timeout=timeout_s) as http:
        for replacement in itertools.cycle(replacements):
            try:
                await asyncio.wait_for(stop.wait(), timeout=every_s)
                break  # the run ended before the next replacement was due
            except TimeoutError:
                pass
            records.append(await post_replacement(http, replacement, headers, run_start))
    return records


async def run_load(
    client: AsyncOpenAI,
    url: str,
    model: str,
    concurrency: int,
    duration_s: float | None,
    max_requests: int | None,
    max_tokens: int,
    prompt: str,
    switches: dict[str, Any] | None = None,
    replacements: Sequence[Replacement] = (),
    replace_every_s: float | None = None,
    admin_key: str | None = None,
    timeout_s: float = 300.0,
    progress: Callable[[RequestRecord], None] | None = None,
) -> LoadRun:
    """Run the load test; at least one of `duration_s` and `max_requests` must be set."""
    if duration_s is None and max_requests is None:
        raise ValueError("a load run needs a duration or a request count (or both)")
    if replacements and not replace_every_s:
        raise ValueError("--replace-adapter needs --replace-every SECONDS")
    await check_model(client, model)
    run_start = time.perf_counter()
    deadline = run_start + duration_s if duration_s is not None else None
    counter = itertools.count()
    records: list[RequestRecord] = []

    def may_start() -> bool:
        if deadline is not None and time.perf_counter() >= deadline:
            return False
        return max_requests is None or next(counter) < max_requests

    async def worker(client_id: int) -> None:
        while may_start():
            record = await stream_one(
                client, model, prompt, max_tokens, switches, client_id, run_start
            )
            records.append(record)
            if progress:
                progress(record)

    stop = asyncio.Event()
    swapper = None
    if replacements and replace_every_s:
        swapper = asyncio.create_task(
            replace_adapters(
                url, admin_key, replacements, replace_every_s, stop, run_start, timeout_s
            )
        )
    try:
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    finally:
        stop.set()
        swaps = await swapper if swapper is not None else []
    wall = time.perf_counter() - run_start
    records.sort(key=lambda r: r.started_s)
    return LoadRun(model=model, concurrency=concurrency, wall_s=wall, requests=records,
                   replacements=swaps)


@dataclass
class SwapRun:
    """One adapter replaced while requests run: every request's outcome around the swap."""

    domain: str
    requests: int
    failures: list[str]
    versions: dict[Any, int]  # adapter version -> requests it served
    in_flight_at_swap: int
    swap_status: int
    swap_seconds: float
    replaced_version: int | None
    new_version: int | None
    after_swap_versions: dict[Any, int]  # of requests started after the swap returned


def _versions(records: Sequence[RequestRecord]) -> dict[Any, int]:
    return dict(sorted(Counter(r.adapter_version for r in records if r.error is None).items()))


async def swap_under_load(
    client: AsyncOpenAI,
    url: str,
    replacement: Replacement,
    prompts: Sequence[str],
    *,
    concurrency: int,
    requests_after_swap: int,
    max_requests: int,
    max_tokens: int,
    admin_key: str | None,
    timeout_s: float,
) -> SwapRun:
    """Keep `concurrency` requests to `replacement.name` in flight, replace the adapter once
    the first one is back, and stop when `requests_after_swap` requests started after the
    swap have returned (or after `max_requests`). A failed swap raises `RuntimeError`."""
    run_start = time.perf_counter()
    records: list[RequestRecord] = []
    first_done, stop = asyncio.Event(), asyncio.Event()
    state = {"started": 0, "swapped_at": float("inf")}

    async def worker(client_id: int) -> None:
        number = client_id
        while not stop.is_set() and state["started"] < max_requests:
            state["started"] += 1
            prompt = prompts[number % len(prompts)]
            records.append(await stream_one(
                client, replacement.name, prompt, max_tokens, None, client_id, run_start
            ))  # fmt: skip
            first_done.set()
            after = sum(1 for r in records if r.started_s >= state["swapped_at"])
            if after >= requests_after_swap or len(records) >= max_requests:
                stop.set()
            number += concurrency

    workers = [asyncio.create_task(worker(w)) for w in range(concurrency)]
    try:
        await first_done.wait()
        in_flight = state["started"] - len(records)
        async with httpx.AsyncClient(base_url=server_root(url), timeout=timeout_s) as http:
            swap = await post_replacement(http, replacement, _admin_headers(admin_key), run_start)
        state["swapped_at"] = time.perf_counter() - run_start
        if swap.error:
            stop.set()
    except BaseException:
        stop.set()
        raise
    finally:
        await asyncio.gather(*workers, return_exceptions=True)
    if swap.error or swap.status is None:
        raise RuntimeError(
            f"replacing adapter {replacement.name!r} failed: {swap.error}: {swap.response}"
        )
    body = swap.response if isinstance(swap.response, dict) else {}
    return SwapRun(
        domain=replacement.name,
        requests=len(records),
        failures=[r.error for r in records if r.error],
        versions=_versions(records),
        in_flight_at_swap=in_flight,
        swap_status=swap.status,
        swap_seconds=swap.seconds,
        replaced_version=body.get("replaced_version"),
        new_version=body.get("version"),
        after_swap_versions=_versions([r for r in records if r.started_s >= state["swapped_at"]]),
    )


def build_report(run: LoadRun, params: dict[str, Any]) -> Report:
    """Tables, the latency histogram and every request of a load run."""
    s = run.summary()
    table = Table(
        title=f"Load: {run.model}, {run.concurrency} concurrent clients",
        headers=["requests", "ok", "errors", "wall s", "req/s", "output tok/s",
                 "p50 s", "p95 s", "p99 s", "TTFT p50 s", "TTFT p95 s", "TTFT p99 s"],
        rows=[[
            s["requests"], s["ok"], s["errors"], s["wall_s"], s["requests_per_s"],
            s["output_tokens_per_s"], s["latency_p50_s"], s["latency_p95_s"],
            s["latency_p99_s"], s["ttft_p50_s"], s["ttft_p95_s"], s["ttft_p99_s"],
        ]],
        note="Latency is to the last streamed byte; TTFT to the first content token.",
    )
    tables = [table]
    if run.replacements:
        tables.append(Table(
            title="Adapter replacements during the run",
            headers=["at s", "name", "path", "status", "seconds", "error"],
            rows=[[r.started_s, r.name, r.path, r.status, r.seconds, r.error]
                  for r in run.replacements],
            note=f"{s['replacement_errors']} of {s['replacements']} replacements failed; "
                 f"adapter versions served: {s['adapter_versions'] or 'n/a'}",
        ))
    if s["error_kinds"]:
        tables.append(Table(
            title="Errors",
            headers=["error", "count"],
            rows=[[kind, count] for kind, count in s["error_kinds"].items()],
        ))
    ok = [r for r in run.requests if r.error is None]
    figures = {
        "latency.png": histogram(
            f"Latency under load ({run.concurrency} clients)",
            {
                "latency": [r.latency_s for r in ok],
                "time to first token": [r.ttft_s for r in ok if r.ttft_s is not None],
            },
            xlabel="seconds",
        )
    }
    results = [asdict(r) for r in run.requests]
    return Report(
        kind="load",
        title=f"Load test: {run.model}",
        params=params,
        summary={**s, "replacement_log": [asdict(r) for r in run.replacements]},
        results=results,
        tables=tables,
        figures=figures,
    )
