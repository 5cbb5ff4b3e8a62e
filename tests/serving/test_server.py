"""End to end on the real parts: vLLM (CPU) with the tiny Llama, Qdrant local mode, the
all-MiniLM-L6-v2 embedder, uvicorn on 127.0.0.1, and the official `openai` client.

One server (one vLLM engine) serves the whole module; the restart test stops it and starts
a second app on the same state, engine and index.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from transformers import AutoTokenizer

from retrieval.prompt import build_messages
from serving.app import create_app
from serving.engine import create_engine
from tests.serving.conftest import (
    ADMIN,
    CHAT,
    CHAT_KEY,
    LoopThread,
    retrieval_settings,
    serving_settings,
    wait_for_job,
)
from tests.support.live_server import RunningServer

pytestmark = pytest.mark.vllm

SYSTEM_PROMPT = "You answer questions about ACME products."
QUESTION = "How many days do I have to get a refund?"
MAX_TOKENS = 12


class Live:
    """The module's server: engine, app, uvicorn, and its data folders."""

    def __init__(self, loop: LoopThread, model: Path, adapters_root: Path, tmp: Path) -> None:
        self.loop = loop
        self.model = model
        self.settings = serving_settings(adapters_root, tmp / "data")
        self.retrieval = retrieval_settings(tmp / "qdrant")
        self.engine = create_engine(self.settings.engine, model)
        loop.run(self.engine.start(), timeout=400)
        self.server: RunningServer | None = None
        self.start()

    def start(self) -> None:
        app = create_app(self.settings, self.retrieval, self.model, engine=self.engine)
        self.server = RunningServer(self.loop, app)
        self.url = self.server.url
        self.http = httpx.Client(base_url=self.url, timeout=120)

    def stop(self) -> None:
        if self.server is not None:
            self.http.close()
            self.server.stop()
            self.server = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self, key: str = CHAT_KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=120)

    def async_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=f"{self.url}/v1", api_key=CHAT_KEY, max_retries=0, timeout=120
        )

    def load(self, name: str, path: str) -> dict[str, Any]:
        response = self.http.post(
            "/admin/adapters", headers=ADMIN, json={"name": name, "path": path}
        )
        assert response.status_code in (200, 201), response.text
        return response.json()

    def close(self) -> None:
        self.stop()
        self.loop.run(self.engine.shutdown(), timeout=120)


@pytest.fixture(scope="module")
def live(
    srv_loop: LoopThread,
    srv_model: Path,
    srv_adapters_root: Path,
    srv_documents: dict[str, bytes],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Live]:
    server = Live(srv_loop, srv_model, srv_adapters_root, tmp_path_factory.mktemp("srv-live"))
    try:
        server.load("acme", "acme/v1")
        server.load("other", "other")
        created = server.http.post(
            "/admin/domains",
            headers=ADMIN,
            json={"name": "acme", "adapter": "acme", "index": True, "system_prompt": SYSTEM_PROMPT},
        )
        assert created.status_code == 201, created.text
        for path, data in srv_documents.items():
            response = server.http.post(
                "/admin/domains/acme/documents",
                headers=ADMIN,
                files={"file": (Path(path).name, data)},
                data={"path": path},
            )
            assert response.status_code == 201, response.text
        job = server.http.post("/admin/domains/acme/reindex", headers=ADMIN)
        assert job.status_code == 202, job.text
        assert wait_for_job(server.http, job.json()["id"])["status"] == "succeeded"
        yield server
    finally:
        server.close()


def ask(client: openai.OpenAI, model: str, **extra: Any):
    extra = {"max_tokens": MAX_TOKENS, "temperature": 0, **extra}
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": QUESTION}], **extra
    )


def test_chat_with_and_without_streaming(live: Live) -> None:
    client = live.client()
    reply = ask(client, "base")
    text = reply.choices[0].message.content
    assert text and reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens > 0
    assert reply.model_extra["lorag"] == {
        "domain": None,
        "adapter": None,
        "adapter_version": None,
        "index_version": None,
    }
    # Streaming gives the same greedy text, in OpenAI chunks, with the extensions at the end.
    stream = ask(client, "base", stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(final) == 1 and final[0].model_extra["sources"] == []
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
    # The base model id and the alias serve the same model.
    assert ask(client, live.model.name).choices[0].message.content == text
    # Stop strings cut the output (greedy, so the cut is known).
    cut = text.strip().split()[1] if len(text.strip().split()) > 1 else text.strip()[-1]
    stopped = ask(client, "base", stop=[cut])
    assert stopped.choices[0].finish_reason == "stop"
    assert cut not in stopped.choices[0].message.content
    assert text.startswith(stopped.choices[0].message.content)
    models = {m.id: m.model_extra["lorag"] for m in client.models.list().data}
    assert models[live.model.name]["kind"] == "base"
    assert models["acme"] == {
        "kind": "domain",
        "adapter": "acme",
        "adapter_version": 1,
        "index": True,
    }
    assert models["other"] == {"kind": "adapter", "version": 1}


def test_domain_routing_with_adapter_and_retrieval(live: Live) -> None:
    client = live.client()
    reply = ask(client, "acme")
    sources = reply.model_extra["sources"]
    served = reply.model_extra["lorag"]
    assert served["domain"] == "acme" and served["adapter"] == "acme"
    assert served["adapter_version"] == 1 and served["index_version"]
    assert [s["index"] for s in sources] == list(range(1, len(sources) + 1))
    assert len(sources) == live.retrieval.k
    # The domain's own index answered (its four chunks' order is the fusion's business,
    # measured in benchmarks/retrieval_quality.py, not here).
    assert sources[0]["doc_id"] == "refunds.md"
    assert any("14 days" in s["text"] for s in sources)
    assert set(sources[0]) == {"index", "doc_id", "source", "heading", "score", "text"}

    # The prompt the model saw is exactly build_messages + the chat template.
    tokenizer = AutoTokenizer.from_pretrained(live.model)
    passages = [_Passage(s["source"], s["heading"], s["text"]) for s in sources]
    messages = build_messages([{"role": "user", "content": QUESTION}], passages, SYSTEM_PROMPT)
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert reply.usage.prompt_tokens == len(ids)

    # The four configurations eval compares, switched per request.
    configs = {
        (adapter, retrieval): ask(
            client, "acme", extra_body={"lorag": {"adapter": adapter, "retrieval": retrieval}}
        )
        for adapter in (False, True)
        for retrieval in (False, True)
    }
    for (adapter, retrieval), response in configs.items():
        meta = response.model_extra["lorag"]
        assert meta["adapter"] == ("acme" if adapter else None)
        assert bool(response.model_extra["sources"]) is retrieval
        assert (meta["index_version"] is not None) is retrieval
    assert configs[(True, True)].choices[0].message.content == reply.choices[0].message.content
    assert (
        configs[(False, True)].choices[0].message.content
        != configs[(True, True)].choices[0].message.content
    )
    narrow = ask(client, "acme", extra_body={"lorag": {"k": 1, "mode": "sparse"}})
    assert len(narrow.model_extra["sources"]) == 1

    # A streamed domain answer carries the sources and the served-by block in its last chunk.
    chunks = list(ask(client, "acme", stream=True))
    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    assert final.model_extra["sources"] == sources
    assert final.model_extra["lorag"] == served

    # An adapter named directly: the adapter, no retrieval.
    direct = ask(client, "other")
    assert direct.model_extra["lorag"]["adapter"] == "other"
    assert direct.model_extra["sources"] == []


class _Passage:
    def __init__(self, source: str, heading: str, text: str) -> None:
        self.source, self.heading, self.text = source, heading, text


def test_search_endpoint(live: Live) -> None:
    response = live.http.post(
        "/v1/search", headers=CHAT, json={"domain": "acme", "query": "express shipping cost"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"][0]["doc_id"] == "shipping.md"
    assert body["index_version"] and body["mode"] == "hybrid"
    missing = live.http.post("/v1/search", headers=CHAT, json={"domain": "nope", "query": "x"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "index_not_found"


def test_auth_and_bad_input_over_http(live: Live) -> None:
    with pytest.raises(openai.AuthenticationError):
        ask(live.client(key="wrong-key-000000"), "base")
    with pytest.raises(openai.BadRequestError) as err:
        live.client().chat.completions.create(
            model="base", messages=[{"role": "user", "content": "x"}] * 100
        )
    assert err.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as err:
        ask(live.client(), "base", max_tokens=10**7)
    assert err.value.body["param"] == "max_tokens"
    with pytest.raises(openai.NotFoundError) as err:
        ask(live.client(), "unknown-domain")
    assert err.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        ask(live.client(), "base", n=3)

    http = live.http
    assert http.post("/admin/adapters", json={"name": "x", "path": "other"}).status_code == 401
    assert http.get("/admin/domains", headers=CHAT).status_code == 403
    bad_json = http.post(
        "/v1/chat/completions",
        headers={**CHAT, "content-type": "application/json"},
        content=b"{nope",
    )
    assert (
        bad_json.status_code == 400 and bad_json.json()["error"]["type"] == "invalid_request_error"
    )
    for path, expected in [
        ("../../etc", "invalid_adapter_path"),
        ("escape", "invalid_adapter_path"),
        ("no-manifest", "incompatible_adapter"),
        ("foreign", "incompatible_adapter"),
    ]:
        response = http.post("/admin/adapters", headers=ADMIN, json={"name": "x", "path": path})
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"]["code"] == expected
    assert "x" not in [a["name"] for a in http.get("/admin/adapters", headers=ADMIN).json()["data"]]


def test_hot_swap_under_concurrent_requests(live: Live) -> None:
    """Replace and unload adapters while 8 clients chat: no failures, and every answer is
    exactly the greedy output of the one version its `lorag.adapter_version` names."""
    client = live.client()
    paths = {"acme/v1": None, "acme/v2": None}
    version_path: dict[int, str] = {}
    for path in ("acme/v2", "acme/v1"):  # learn each version's greedy answer
        loaded = live.load("acme", path)
        version_path[loaded["version"]] = path
        reply = ask(client, "acme", extra_body={"lorag": {"retrieval": False}})
        assert reply.model_extra["lorag"]["adapter_version"] == loaded["version"]
        paths[path] = reply.choices[0].message.content
    assert paths["acme/v1"] != paths["acme/v2"]
    base = ask(client, "acme", extra_body={"lorag": {"retrieval": False, "adapter": False}})
    assert base.choices[0].message.content not in paths.values()

    results: list[tuple[int, str]] = []
    failures: list[str] = []
    stop = threading.Event()

    async def one_client(number: int) -> None:
        aclient = live.async_client()
        while not stop.is_set():
            try:
                if number % 2:
                    reply = await aclient.chat.completions.create(
                        model="acme",
                        messages=[{"role": "user", "content": QUESTION}],
                        max_tokens=MAX_TOKENS,
                        temperature=0,
                        extra_body={"lorag": {"retrieval": False}},
                    )
                    text = reply.choices[0].message.content
                    version = reply.model_extra["lorag"]["adapter_version"]
                else:
                    stream = await aclient.chat.completions.create(
                        model="acme",
                        messages=[{"role": "user", "content": QUESTION}],
                        max_tokens=MAX_TOKENS,
                        temperature=0,
                        stream=True,
                        extra_body={"lorag": {"retrieval": False}},
                    )
                    text, version = "", None
                    async for chunk in stream:
                        if chunk.choices:
                            text += chunk.choices[0].delta.content or ""
                            if chunk.choices[0].finish_reason:
                                version = chunk.model_extra["lorag"]["adapter_version"]
                results.append((version, text))
            except Exception as err:  # noqa: BLE001 - every failure is collected
                failures.append(f"client {number}: {type(err).__name__}: {err}")
        await aclient.close()

    async def clients() -> None:
        await asyncio.gather(*(one_client(n) for n in range(8)))

    runner = threading.Thread(target=lambda: asyncio.run(clients()))
    runner.start()
    try:
        for round_number in range(6):
            path = "acme/v2" if round_number % 2 == 0 else "acme/v1"
            loaded = live.load("acme", path)
            version_path[loaded["version"]] = path
            if round_number == 2:
                unloaded = live.http.delete("/admin/adapters/other", headers=ADMIN)
                assert unloaded.status_code == 200
            if round_number == 4:
                live.load("other", "other")
            _wait_for_more(results, 4)  # let traffic run on this version
    finally:
        stop.set()
        runner.join(timeout=120)
    assert not failures, failures[:5]
    assert len(results) >= 24
    versions_seen = {version for version, _ in results}
    assert len(versions_seen) >= 4
    for version, text in results:
        assert text == paths[version_path[version]], (version, text)
    # Replaced versions drained out of the engine.
    _wait(lambda: len(live.engine.adapters()) == 2)
    adapters = live.http.get("/admin/adapters", headers=ADMIN).json()["data"]
    assert all(a["draining_versions"] == [] and a["in_flight"] == 0 for a in adapters)


def test_reindex_while_searching(live: Live, srv_documents: dict[str, bytes]) -> None:
    before = live.http.post(
        "/v1/search", headers=CHAT, json={"domain": "acme", "query": "refund window"}
    ).json()["index_version"]
    added = live.http.post(
        "/admin/domains/acme/documents",
        headers=ADMIN,
        files={
            "file": (
                "loyalty.md",
                b"# Loyalty\n\nMembers of the gold club earn nine points per euro.\n",
            )
        },
        data={"path": "loyalty.md"},
    )
    assert added.status_code == 201
    outcomes: list[tuple[int, int]] = []
    done = threading.Event()

    def searcher() -> None:
        with httpx.Client(base_url=live.url, timeout=60) as http:
            while not done.is_set():
                response = http.post(
                    "/v1/search",
                    headers=CHAT,
                    json={"domain": "acme", "query": "refund window", "k": 2},
                )
                outcomes.append((response.status_code, len(response.json().get("data", []))))

    threads = [threading.Thread(target=searcher) for _ in range(2)]
    for thread in threads:
        thread.start()
    job = live.http.post("/admin/domains/acme/reindex", headers=ADMIN).json()
    again = live.http.post("/admin/domains/acme/reindex", headers=ADMIN)
    try:
        assert again.status_code == 409  # one re-index per domain at a time
        finished = wait_for_job(live.http, job["id"])
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=60)
    assert finished["status"] == "succeeded", finished
    assert finished["result"]["documents_total"] == 4
    assert outcomes and all(outcome == (200, 2) for outcome in outcomes), outcomes[:5]
    after = live.http.post(
        "/v1/search", headers=CHAT, json={"domain": "acme", "query": "gold club points"}
    ).json()
    assert after["data"][0]["doc_id"] == "loyalty.md"
    assert after["index_version"] != before


def test_metrics_and_audit_log(live: Live, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lorag.audit")
    reply = ask(live.client(), "acme")
    _wait(lambda: any(r.name == "lorag.audit" for r in caplog.records))
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "lorag.audit"]
    line = next(item for item in lines if item["request_id"] == reply.id)
    served = reply.model_extra["lorag"]
    assert line["domain"] == "acme" and line["adapter"] == "acme"
    assert line["adapter_version"] == served["adapter_version"]
    assert line["index_version"] == served["index_version"]
    assert line["completion_tokens"] == reply.usage.completion_tokens
    assert line["prompt_tokens"] == reply.usage.prompt_tokens
    assert line["sources"][0] == reply.model_extra["sources"][0]["doc_id"]
    assert line["status"] == "ok" and line["api_key"] == "tester"
    text = live.http.get("/metrics").text
    for needle in (
        'lorag_chat_requests_total{model="acme",status="ok"}',
        'lorag_prompt_tokens_total{model="acme"}',
        'lorag_retrieval_seconds_count{domain="acme"}',
        'lorag_adapter_loads_total{adapter="acme"}',
        'lorag_adapter_swaps_total{adapter="acme"}',
        'lorag_reindex_jobs_total{status="succeeded"}',
        "lorag_chat_time_to_first_token_seconds_bucket",
    ):
        assert needle in text, needle


def test_restart_keeps_domains_adapters_and_index(live: Live) -> None:
    client = live.client()
    before_models = {m.id: m.model_extra["lorag"] for m in client.models.list().data}
    before = ask(client, "acme")
    live.restart()
    assert live.http.get("/ready").json()["ready"] is True
    client = live.client()
    after_models = {m.id: m.model_extra["lorag"] for m in client.models.list().data}
    assert after_models == before_models
    after = ask(client, "acme")
    assert after.model_extra["lorag"] == before.model_extra["lorag"]
    passages = lambda reply: [(s["doc_id"], s["text"]) for s in reply.model_extra["sources"]]
    assert passages(after) == passages(before)
    assert after.choices[0].message.content == before.choices[0].message.content
    # The engine holds exactly the restored versions (the first app removed its own).
    adapters = live.http.get("/admin/adapters", headers=ADMIN).json()["data"]
    assert {a["name"] for a in adapters} == {"acme", "other"}
    assert sorted(a.key for a in live.engine.adapters()) == sorted(
        f"{a['name']}@v{a['version']}" for a in adapters
    )
    assert live.http.get("/admin/domains/acme", headers=ADMIN).json()["documents"] == 4


def _wait_for_more(results: list, count: int) -> None:
    seen = len(results)
    _wait(lambda: len(results) >= seen + count)


def _wait(condition, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
