"""Serving benchmark: lorag's server against vLLM's own OpenAI server, adapters against the
base model, and adapter replacement under load; one tiny model, one load, one run.

    .venv/bin/python benchmarks/serving.py                  # the default load
    .venv/bin/python benchmarks/serving.py --requests 32    # a quick run

(a) lorag `/v1/chat/completions` (retrieval off, base model) against
    `python -m vllm.entrypoints.openai.api_server` on the same model with the same engine
    arguments: throughput (completion tokens/s) and p50/p95 latency ratios; goal >= 0.95x.
(b) lorag with requests spread over 4 adapters against the base model only; goal >= 0.8x.
(c) adapter load time, and failures across 20 replacements of one adapter while 8 clients
    chat with it; goal 0 failures (a response whose text is not the greedy output of the
    version it names counts as a failure too).
(d) lorag chat with retrieval on (a domain indexing examples/acme-router/docs, k=3) against
    vLLM's own server fed, through `/v1/completions`, the very token ids lorag renders for
    each question (context included): lorag's whole overhead (query embedding, search,
    prompt rendering, HTTP); goal >= 0.95x. The questions are the example domain's 117
    (held-out and training) and lorag's query cache is off, so every request pays for its
    question's embedding. The benchmark checks that both servers saw prompts of the same
    length.

Both servers run as subprocesses at the same time and each pair of scenarios alternates
between them over `--rounds` rounds, the other server first in every other round, so
machine noise hits both alike; the ratios are printed over all rounds and per round
(min / median / max), which shows how far one run can be trusted. Every request is greedy
with the same prompts, so both servers generate the same tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx

from serving.process import ServerProcess, free_port

MAX_ADAPTERS = 6  # 4 mixed + 1 swapped + its transient second version
RAG_DOMAIN = "docs"
RAG_DOCS = ROOT / "examples" / "acme-router" / "docs"
RAG_K = 3
LORA_RANK = 8
MAX_MODEL_LEN = 1024
MAX_NUM_SEQS = 32
QUESTIONS = [
    "What is the refund policy for a red product?",
    "How many days does standard shipping take?",
    "Which config file holds the server port?",
    "Is there a warranty on the blue model?",
    "How do I open a support ticket about an error?",
    "What does the index version mean in a search answer?",
    "Can the adapter answer a question about the price?",
    "Where is the source of the second chunk?",
]


# Servers -------------------------------------------------------------------------------------


def rag_questions() -> list[str]:
    """The example domain's questions, held-out and training, each once."""
    import json

    questions: list[str] = []
    for name in ("heldout.jsonl", "train.jsonl"):
        for line in (RAG_DOCS.parent / "qa" / name).read_text().splitlines():
            if line.strip():
                questions.append(json.loads(line)["question"])
    return list(dict.fromkeys(questions))


def rag_settings(data_dir: Path):
    from retrieval.settings import (
        ChunkingSettings,
        EmbeddingSettings,
        QdrantSettings,
        RetrievalSettings,
    )

    # The demo's chunk size: three passages and a question fit the tiny model's context. No
    # query cache: every request pays for its question's embedding, as new questions do.
    return RetrievalSettings(
        qdrant=QdrantSettings(path=data_dir / "qdrant"),
        chunking=ChunkingSettings(max_tokens=64, overlap_tokens=10),
        embedding=EmbeddingSettings(query_cache_size=0),
    )


def serve_lorag(model: Path, adapters_root: Path, data_dir: Path, port: int) -> None:
    """Run lorag's server (the benchmark starts this mode as a subprocess)."""
    import uvicorn

    from serving.app import create_app
    from serving.engine.settings import EngineSettings
    from serving.settings import DomainSpec, ServingSettings

    settings = ServingSettings(
        port=port,
        served_model_name="base",
        domains={RAG_DOMAIN: DomainSpec(index=True, k=RAG_K)},
        adapters_root=adapters_root,
        data_dir=data_dir,
        engine=EngineSettings(
            max_adapters=MAX_ADAPTERS,
            max_lora_rank=LORA_RANK,
            max_model_len=MAX_MODEL_LEN,
            max_num_seqs=MAX_NUM_SEQS,
        ),
    )
    retrieval = rag_settings(data_dir)
    app = create_app(settings, retrieval, model)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def start(name: str, command: list[str], port: int, workdir: Path) -> ServerProcess:
    """A server subprocess logging to `<workdir>/<name>.log`; stopped with SIGINT (Ctrl-C)."""
    return ServerProcess(
        command, workdir / f"{name}.log", f"http://127.0.0.1:{port}", cwd=ROOT
    ).start()


# Load ----------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    tokens: int = 0
    failures: list[str] = field(default_factory=list)

    def merge(self, other: LoadResult) -> None:
        self.seconds += other.seconds
        self.latencies += other.latencies
        self.tokens += other.tokens
        self.failures += other.failures

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


Body = tuple[str, dict]  # (path, JSON body) of one request


def chat_body(model: str, question: str, max_tokens: int) -> Body:
    return "/v1/chat/completions", {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }


def chat_bodies(
    models: list[str], max_tokens: int, questions: list[str] = QUESTIONS
) -> Callable[[int], Body]:
    """Greedy chat requests, models and questions cycled."""
    return lambda n: chat_body(models[n % len(models)], questions[n % len(questions)], max_tokens)


def completion_bodies(
    prompts: list[list[int]], max_tokens: int, stop: list[str]
) -> Callable[[int], Body]:
    """Greedy text completions of pre-rendered prompts (token ids), cycled."""
    return lambda n: (
        "/v1/completions",
        {
            "model": "base",
            "prompt": prompts[n % len(prompts)],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stop": stop,
        },
    )


async def run_load(
    url: str, bodies: Callable[[int], Body], requests: int, concurrency: int
) -> LoadResult:
    """`requests` requests built by `bodies`, `concurrency` at a time."""
    result = LoadResult()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for number in range(requests):
        queue.put_nowait(number)

    async def worker(http: httpx.AsyncClient) -> None:
        while True:
            try:
                number = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            path, body = bodies(number)
            started = time.perf_counter()
            try:
                response = await http.post(path, json=body)
                response.raise_for_status()
                result.tokens += response.json()["usage"]["completion_tokens"]
                result.latencies.append(time.perf_counter() - started)
            except Exception as err:  # noqa: BLE001 - counted
                result.failures.append(f"{type(err).__name__}: {err}")

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        result.seconds = time.perf_counter() - started
    return result


async def greedy_text(http: httpx.AsyncClient, model: str, max_tokens: int) -> tuple[str, int]:
    path, body = chat_body(model, QUESTIONS[0], max_tokens)
    response = await http.post(path, json=body)
    response.raise_for_status()
    reply = response.json()
    return reply["choices"][0]["message"]["content"], reply["lorag"]["adapter_version"]


async def replacements_under_load(
    url: str, paths: tuple[str, str], replacements: int, clients: int, max_tokens: int
) -> tuple[list[float], LoadResult, int]:
    """Replace adapter `swap` `replacements` times (alternating two folders) while `clients`
    chat with it; returns (replacement seconds, client results, inconsistent answers)."""
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        expected: dict[str, str] = {}
        version_path: dict[int, str] = {}
        for path in paths:
            response = await http.post("/admin/adapters", json={"name": "swap", "path": path})
            response.raise_for_status()
            text, version = await greedy_text(http, "swap", max_tokens)
            expected[path], version_path[version] = text, path
        if expected[paths[0]] == expected[paths[1]]:
            raise RuntimeError("the two adapters give the same greedy answer; use other seeds")

        load = LoadResult()
        inconsistent = 0
        stop = asyncio.Event()

        async def client() -> None:
            nonlocal inconsistent
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    text, version = await greedy_text(http, "swap", max_tokens)
                    load.latencies.append(time.perf_counter() - started)
                    if version not in version_path or text != expected[version_path[version]]:
                        inconsistent += 1
                except Exception as err:  # noqa: BLE001 - counted
                    load.failures.append(f"{type(err).__name__}: {err}")

        tasks = [asyncio.create_task(client()) for _ in range(clients)]
        seconds: list[float] = []
        started_all = time.perf_counter()
        try:
            for number in range(replacements):
                path = paths[number % 2]
                before = len(load.latencies)
                started = time.perf_counter()
                response = await http.post("/admin/adapters", json={"name": "swap", "path": path})
                seconds.append(time.perf_counter() - started)
                if response.status_code >= 400:
                    load.failures.append(f"replacement {number}: HTTP {response.status_code}")
                    continue
                version_path[response.json()["version"]] = path
                deadline = time.monotonic() + 60
                while len(load.latencies) < before + clients and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)  # let traffic run on the new version
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        load.seconds = time.perf_counter() - started_all
        return seconds, load, inconsistent


# The run -------------------------------------------------------------------------------------


def prepare(
    workdir: Path, questions: list[str], model: Path | None
) -> tuple[Path, Path, list[list[int]], list[str]]:
    """The model (the tiny one unless given), 6 random adapters for the tiny model, and the
    index of the retrieval scenario with the prompt ids lorag renders for each question
    (retrieved context included, in the layout lorag serves the model with) and the stop
    strings it adds."""
    from transformers import AutoTokenizer

    from retrieval import Retriever
    from retrieval.prompt import COMPLETION_STOP, build_messages, completion_ids, resolve_layout
    from tests.support.adapters import make_random_adapter
    from tests.support.tiny_models import build_tiny_model

    adapters = workdir / "adapters"
    adapters.mkdir()
    if model is None:
        model = build_tiny_model(workdir / "tiny-llama")
        for seed in range(1, 7):
            make_random_adapter(model, adapters / f"a{seed}", seed=seed, r=LORA_RANK)
    layout = resolve_layout("auto", model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    prompts = []
    with Retriever(rag_settings(workdir / "data")) as retriever:
        retriever.index(RAG_DOMAIN, RAG_DOCS)
        for question in questions:
            hits = retriever.search(RAG_DOMAIN, question, k=RAG_K)
            messages = build_messages([{"role": "user", "content": question}], hits)
            if layout == "completion":
                prompts.append(completion_ids(tokenizer, messages)[0])
            else:
                prompts.append(
                    list(
                        tokenizer.apply_chat_template(
                            messages, add_generation_prompt=True, tokenize=True, return_dict=False
                        )
                    )
                )
    return model, adapters, prompts, [COMPLETION_STOP] if layout == "completion" else []


async def same_prompts(
    lorag_url: str, vllm_url: str, questions: list[str], prompts: list[list[int]]
) -> None:
    """Refuse to compare unless each question's prompt has the same length on both servers."""
    async with httpx.AsyncClient(timeout=300) as http:
        for number, prompt in enumerate(prompts):
            path, body = chat_body(RAG_DOMAIN, questions[number], 1)
            response = await http.post(lorag_url + path, json=body)
            if response.status_code != 200:
                raise RuntimeError(f"lorag answered {response.status_code}: {response.text}")
            ours = response.json()["usage"]
            path, body = completion_bodies(prompts, 1, [])(number)
            theirs = (
                (await http.post(vllm_url + path, json=body)).raise_for_status().json()["usage"]
            )
            if not ours["prompt_tokens"] == theirs["prompt_tokens"] == len(prompt):
                raise RuntimeError(
                    f"question {number}: lorag rendered {ours['prompt_tokens']} "
                    f"prompt tokens, vLLM got {theirs['prompt_tokens']}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=96, help="requests per scenario and round")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--replacements", type=int, default=20)
    parser.add_argument(
        "--scenarios",
        default="a,b,c,d",
        help="which of the scenarios to run, comma-separated (default: all four)",
    )
    parser.add_argument(
        "--model",
        type=Path,
        help="a model folder instead of the tiny model (e.g. lorag-data/models/gemma-3-270m); "
        "scenario d only, since lorag serves a pretrained model in the completion layout",
    )
    args = parser.parse_args()
    scenarios = set(args.scenarios.split(","))
    if args.model is not None and scenarios != {"d"}:
        parser.error("--model runs scenario d only: add --scenarios d")
    if not scenarios or not scenarios <= {"a", "b", "c", "d"}:
        parser.error(
            f"--scenarios takes a comma-separated subset of a,b,c,d, not {args.scenarios!r}"
        )
    names = ("vllm", "lorag", "vllm-mixed", "mixed", "vllm-rag", "lorag-rag")
    rounds: dict[str, list[LoadResult]] = {name: [] for name in names}
    swap_load: LoadResult | None = None
    swap_seconds: list[float] = []
    load_seconds: list[float] = []
    inconsistent = 0
    questions = rag_questions()

    from rich.console import Console
    from rich.table import Table

    console = Console(width=110)
    with tempfile.TemporaryDirectory(prefix="lorag-bench-") as temp:
        workdir = Path(temp)
        with console.status("Building the tiny model, 6 random adapters and an index"):
            model, adapters, rag_prompts, rag_stop = prepare(workdir, questions, args.model)
        lorag_port, vllm_port = free_port(), free_port()
        me = [sys.executable, str(Path(__file__).resolve())]
        lorag = start(
            "lorag",
            [
                *me,
                "--serve-lorag",
                str(model),
                str(adapters),
                str(workdir / "data"),
                str(lorag_port),
            ],
            lorag_port,
            workdir,
        )
        vllm = start(
            "vllm",
            [
                sys.executable,
                "-m",
                "vllm.entrypoints.openai.api_server",
                "--model",
                str(model),
                "--served-model-name",
                "base",
                "--dtype",
                "float32",
                "--host",
                "127.0.0.1",
                "--port",
                str(vllm_port),
                "--max-model-len",
                str(MAX_MODEL_LEN),
                "--max-num-seqs",
                str(MAX_NUM_SEQS),
                "--enable-lora",
                "--max-loras",
                str(MAX_ADAPTERS + 1),
                "--max-cpu-loras",
                str(MAX_ADAPTERS + 1),
                "--max-lora-rank",
                str(LORA_RANK),
                "--seed",
                "0",
                "--disable-log-stats",
                "--disable-uvicorn-access-log",
                "--uvicorn-log-level",
                "warning",
                *(
                    ["--lora-modules", *(f"a{n}={adapters / f'a{n}'}" for n in range(1, 5))]
                    if args.model is None
                    else []
                ),
            ],
            vllm_port,
            workdir,
        )
        try:
            with console.status("Starting both servers (vLLM engine start-up, twice)"):
                lorag.wait_ready(600, "/ready")
                vllm.wait_ready(600, "/v1/models")
            with httpx.Client(base_url=lorag.url, timeout=300) as http:
                for number in range(1, 5 if args.model is None else 1):
                    started = time.perf_counter()
                    response = http.post(
                        "/admin/adapters", json={"name": f"a{number}", "path": f"a{number}"}
                    )
                    response.raise_for_status()
                    load_seconds.append(time.perf_counter() - started)
            asyncio.run(same_prompts(lorag.url, vllm.url, questions, rag_prompts))
            mixed = [f"a{n}" for n in range(1, 5)]
            tokens = args.max_tokens
            # (reference on vLLM's server, lorag) per compared scenario
            pairs = {
                "a": (
                    ("vllm", vllm.url, chat_bodies(["base"], tokens)),
                    ("lorag", lorag.url, chat_bodies(["base"], tokens)),
                ),
                "b": (
                    ("vllm-mixed", vllm.url, chat_bodies(mixed, tokens)),
                    ("mixed", lorag.url, chat_bodies(mixed, tokens)),
                ),
                "d": (
                    ("vllm-rag", vllm.url, completion_bodies(rag_prompts, tokens, rag_stop)),
                    ("lorag-rag", lorag.url, chat_bodies([RAG_DOMAIN], tokens, questions)),
                ),
            }
            pairs = {key: pair for key, pair in pairs.items() if key in scenarios}
            for pair in pairs.values():  # warm-up
                for _, url, bodies in pair:
                    asyncio.run(run_load(url, bodies, args.concurrency, args.concurrency))
            for round_number in range(1, args.rounds + 1):
                for pair in pairs.values():
                    # the other server first in every other round
                    for name, url, bodies in pair if round_number % 2 else pair[::-1]:
                        with console.status(f"Round {round_number}/{args.rounds}: {name}"):
                            rounds[name].append(
                                asyncio.run(run_load(url, bodies, args.requests, args.concurrency))
                            )
            vllm.stop(60, signal.SIGINT)  # the replacement test runs on lorag alone
            if "c" in scenarios:
                with console.status(
                    f"{args.replacements} replacements under {args.concurrency} clients"
                ):
                    swap_seconds, swap_load, inconsistent = asyncio.run(
                        replacements_under_load(
                            lorag.url, ("a5", "a6"), args.replacements, args.concurrency, 16
                        )
                    )
        finally:
            lorag.stop(60, signal.SIGINT)
            vllm.stop(60, signal.SIGINT)

    model_name = "tiny Llama" if args.model is None else args.model.name
    totals = {name: LoadResult() for name in rounds}
    for name, results in rounds.items():
        for result in results:
            totals[name].merge(result)

    def row(result: LoadResult) -> list[str]:
        return [
            f"{result.tokens_per_s:.1f}" if result.tokens else "-",
            f"{result.percentile(50) * 1000:.0f}",
            f"{result.percentile(95) * 1000:.0f}",
            str(len(result.latencies)),
            str(len(result.failures)),
        ]

    table = Table(title=f"Serving benchmark ({model_name}, float32, vLLM CPU engine)")
    for column in ("scenario", "tokens/s", "p50 ms", "p95 ms", "requests", "failures"):
        table.add_column(column, justify="left" if column == "scenario" else "right")
    labels = {
        "vllm": "(a) vLLM OpenAI server, base",
        "lorag": "(a) lorag chat, retrieval off, base",
        "vllm-mixed": "(b) vLLM OpenAI server, 4 adapters mixed",
        "mixed": "(b) lorag chat, 4 adapters mixed",
        "vllm-rag": "(d) vLLM OpenAI server, lorag's rendered prompts",
        "lorag-rag": "(d) lorag chat, retrieval on (k=3)",
    }
    for name, label in labels.items():
        if rounds[name]:
            table.add_row(label, *row(totals[name]))
    if swap_load is not None:
        table.add_row("(c) lorag chat during replacements", *row(swap_load))
    console.print(table)

    ratios = Table(title="Ratios and goals")
    for column in ("measure", "value", "per round (min / median / max)", "goal", "met"):
        ratios.add_column(column)

    def goal(
        measure: str, value: float, target: str, met: bool, fmt: str = "{:.2f}", spread: str = ""
    ) -> None:
        ratios.add_row(measure, fmt.format(value), spread, target, "yes" if met else "NO")

    def ratio(name: str, reference: str) -> tuple[float, str]:
        """Throughput of `name` over `reference`, over all rounds and round by round."""
        whole = totals[name].tokens_per_s / totals[reference].tokens_per_s
        each = sorted(
            ours.tokens_per_s / theirs.tokens_per_s
            for ours, theirs in zip(rounds[name], rounds[reference], strict=True)
        )
        return whole, f"{each[0]:.2f} / {statistics.median(each):.2f} / {each[-1]:.2f}"

    if "a" in pairs:
        value, spread = ratio("lorag", "vllm")
        goal("(a) throughput lorag / vLLM", value, ">= 0.95", value >= 0.95, spread=spread)
        p50 = totals["lorag"].percentile(50) / totals["vllm"].percentile(50)
        goal("(a) p50 latency lorag / vLLM", p50, "-", True)
    if "b" in pairs:
        value, spread = ratio("mixed", "vllm-mixed")
        goal("(b) throughput 4 adapters, lorag / vLLM", value, "-", True, spread=spread)
    if "a" in pairs and "b" in pairs:
        value, spread = ratio("mixed", "lorag")
        goal("(b) throughput 4 adapters / base", value, ">= 0.80", value >= 0.8, spread=spread)
    if "d" in pairs:
        value, spread = ratio("lorag-rag", "vllm-rag")
        goal(
            "(d) throughput lorag retrieval on / vLLM same prompts",
            value,
            ">= 0.95",
            value >= 0.95,
            spread=spread,
        )
        p50 = totals["lorag-rag"].percentile(50) / totals["vllm-rag"].percentile(50)
        goal("(d) p50 latency lorag / vLLM", p50, "-", True)
    if load_seconds:
        goal(
            "(c) adapter load, new name (mean s)",
            statistics.mean(load_seconds),
            "-",
            True,
            "{:.3f}",
        )
    if swap_load is not None:
        goal("(c) replacement (median s)", statistics.median(swap_seconds), "-", True, "{:.3f}")
        goal("(c) replacement (max s)", max(swap_seconds), "-", True, "{:.3f}")
        failures = len(swap_load.failures) + inconsistent
        goal(
            f"(c) failed or inconsistent answers, {len(swap_seconds)} replacements",
            failures,
            "0",
            failures == 0,
            "{:.0f}",
        )
    console.print(ratios)
    console.print(
        f"{args.requests} requests x {args.rounds} rounds per scenario, {args.concurrency} "
        f"concurrent clients, max_tokens {args.max_tokens}, greedy; both servers: max_loras "
        f"{MAX_ADAPTERS + 1}, max_lora_rank {LORA_RANK}, max_num_seqs {MAX_NUM_SEQS}; (d) "
        f"cycles {len(questions)} questions with no query cache."
    )
    for result in [*totals.values(), *([swap_load] if swap_load else [])]:
        for failure in result.failures[:3]:
            console.print(f"[red]failure:[/] {failure}")


if __name__ == "__main__":  # vLLM spawns worker processes: keep this guard.
    if len(sys.argv) == 6 and sys.argv[1] == "--serve-lorag":
        serve_lorag(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
