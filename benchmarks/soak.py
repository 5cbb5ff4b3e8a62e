"""Soak: thousands of chat requests on the real Gemma 3 270M while one adapter is replaced
again and again; every answer is checked against the greedy output of the version it names.

    .venv/bin/python benchmarks/soak.py                       # 2,000 requests, 8 clients
    .venv/bin/python benchmarks/soak.py --requests 200        # a quick run

`lorag serve` runs as a new user runs it (`python -m lorag serve --config`), on the vLLM
engine, with a domain `soak` routed to adapter `soak`. Two adapter folders (random LoRA
weights on every linear layer of the base model, seeds 1 and 2, so that their greedy
answers differ) are the two versions; the benchmark loads them alternately through
`POST /admin/adapters` every `--replace-every` seconds while `--clients` clients each send
one chat request at a time until `--requests` have been answered. Before the load, each
version's greedy answer to each question is recorded with that version alone on the
server; under load, an answer that differs from its version's, or that names no version,
counts as a failure. Prints requests ok/failed, replacement p50/p95/max and latency p50/p95.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx
import yaml

from serving.process import ServerProcess, free_port

QUESTIONS = [
    "How do I reset the router to factory settings?",
    "What is the warranty period for a replacement unit?",
    "Which port does the admin console listen on?",
    "How long does a refund take to arrive?",
    "Can I move my configuration to a new device?",
    "Where do I find the firmware version?",
    "What happens when the PoE budget is exceeded?",
    "How many access points can one controller manage?",
]
VERSIONS = ("v1", "v2")


@dataclass
class Soak:
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    replacements: list[float] = field(default_factory=list)
    replacement_errors: list[str] = field(default_factory=list)
    versions_seen: set[int] = field(default_factory=set)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def prepare(workdir: Path, rank: int) -> tuple[Path, Path]:
    """The base model (converted from the PyPI GGUF once) and two random adapter versions."""
    from retrieval.prompt import prompt_format, resolve_layout
    from tests.support.adapters import make_random_adapter
    from training.base_models import resolve_base_model

    model = resolve_base_model("gemma-3-270m", ROOT / "lorag-data" / "models")
    layout_format = prompt_format(resolve_layout("auto", model))
    adapters = workdir / "adapters"
    for seed, version in enumerate(VERSIONS, start=1):
        make_random_adapter(
            model,
            adapters / version,
            seed=seed,
            r=rank,
            name="soak",
            scale=0.5,
            prompt_format=layout_format,
        )
    return model, adapters


def write_config(workdir: Path, model: Path, adapters: Path, args: argparse.Namespace) -> Path:
    config = {
        "model": {"base_model": str(model)},
        "retrieval": {"qdrant": {"path": str(workdir / "qdrant")}},
        "serving": {
            "adapters_root": str(adapters),
            "data_dir": str(workdir / "serving"),
            "feedback": {"enabled": False},
            "domains": {"soak": {"adapter": "soak"}},
            "adapters": {"soak": VERSIONS[0]},
            "sampling": {"max_tokens": args.max_tokens},
            "engine": {
                "max_adapters": args.max_adapters,
                "max_lora_rank": args.rank,
                "max_model_len": 512,
                "max_num_seqs": 16,
                "kv_cache_gib": 1,
            },
        },
    }
    path = workdir / "lorag.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def ask(http: httpx.AsyncClient, question: str, max_tokens: int) -> tuple[str, int]:
    body = {
        "model": "soak",
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    response = await http.post("/v1/chat/completions", json=body)
    response.raise_for_status()
    reply = response.json()
    return reply["choices"][0]["message"]["content"], reply["lorag"]["adapter_version"]


async def replace(http: httpx.AsyncClient, path: str) -> int:
    response = await http.post("/admin/adapters", json={"name": "soak", "path": path})
    response.raise_for_status()
    return response.json()["version"]


async def soak(url: str, args: argparse.Namespace) -> Soak:
    result = Soak()
    limits = httpx.Limits(max_connections=args.clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
        expected: dict[str, list[str]] = {}
        version_path: dict[int, str] = {}
        for path in (*VERSIONS[1:], VERSIONS[0]):  # ends with v1 current, as the load starts
            version_path[await replace(http, path)] = path
            expected[path] = [(await ask(http, q, args.max_tokens))[0] for q in QUESTIONS]
        same = sum(a == b for a, b in zip(expected[VERSIONS[0]], expected[VERSIONS[1]]))
        if same:
            raise RuntimeError(f"{same} questions get the same answer from both versions")

        remaining = iter(range(args.requests))
        answers: list[tuple[int, int, int, str]] = []
        done = asyncio.Event()

        async def client() -> None:
            for number in remaining:
                question = number % len(QUESTIONS)
                started = time.perf_counter()
                try:
                    text, version = await ask(http, QUESTIONS[question], args.max_tokens)
                except Exception as err:  # noqa: BLE001 - counted, the soak goes on
                    result.failures.append(f"request {number}: {type(err).__name__}: {err}")
                    continue
                result.latencies.append(time.perf_counter() - started)
                answers.append((number, question, version, text))

        async def replacer() -> None:
            number = 0
            while not done.is_set():
                try:
                    await asyncio.wait_for(done.wait(), args.replace_every)
                    return
                except TimeoutError:
                    pass
                path = VERSIONS[(number + 1) % 2]
                started = time.perf_counter()
                try:
                    version = await replace(http, path)
                except Exception as err:  # noqa: BLE001 - counted
                    result.replacement_errors.append(f"{type(err).__name__}: {err}")
                    continue
                finally:
                    result.replacements.append(time.perf_counter() - started)
                version_path[version] = path
                number += 1

        swapper = asyncio.create_task(replacer())
        await asyncio.gather(*(client() for _ in range(args.clients)))
        done.set()
        await swapper
    # Checked at the end: a request may answer on a new version before its load returns.
    for number, question, version, text in answers:
        result.versions_seen.add(version)
        path = version_path.get(version)
        if path is None or text != expected[path][question]:
            result.wrong.append(f"request {number} (version {version}): {text!r}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--replace-every", type=float, default=2.0, help="seconds")
    parser.add_argument("--max-tokens", type=int, default=6)
    parser.add_argument("--max-adapters", type=int, default=4)
    parser.add_argument("--rank", type=int, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="lorag-soak-") as temp:
        workdir = Path(temp)
        print("preparing the model and two adapter versions ...", flush=True)
        model, adapters = prepare(workdir, args.rank)
        config = write_config(workdir, model, adapters, args)
        port = free_port()
        server = ServerProcess(
            [
                sys.executable,
                "-m",
                "lorag",
                "--config",
                str(config),
                "serve",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            workdir / "lorag.log",
            f"http://127.0.0.1:{port}",
            cwd=ROOT,
        ).start()
        try:
            server.wait_ready(600)
            started = time.perf_counter()
            result = asyncio.run(soak(server.url, args))
            wall = time.perf_counter() - started
        except BaseException:
            print(server.log_tail())
            raise
        finally:
            server.stop()

    ok = len(result.latencies) - len(result.wrong)
    print(
        f"\nSoak: gemma-3-270m, vLLM engine, {args.clients} clients, max_tokens "
        f"{args.max_tokens}, a replacement every {args.replace_every} s, max_adapters "
        f"{args.max_adapters}, {wall:.0f} s"
    )
    rows = [
        ("requests ok", f"{ok} / {args.requests}"),
        ("requests failed (error)", str(len(result.failures))),
        ("answers not their version's greedy output", str(len(result.wrong))),
        ("versions answered", str(len(result.versions_seen))),
        ("replacements", f"{len(result.replacements)} ({len(result.replacement_errors)} failed)"),
        (
            "replacement p50 / p95 / max s",
            f"{statistics.median(result.replacements):.3f} / {percentile(result.replacements, 95):.3f} / {max(result.replacements):.3f}"
            if result.replacements
            else "-",
        ),
        (
            "latency p50 / p95 s",
            f"{percentile(result.latencies, 50):.3f} / {percentile(result.latencies, 95):.3f}"
            if result.latencies
            else "-",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    for line in (result.failures + result.wrong + result.replacement_errors)[:5]:
        print("  ", line)


if __name__ == "__main__":  # vLLM spawns worker processes: keep this guard.
    main()
