"""The HTTP API's rules on a scripted engine: auth, limits, bad input, admin, persistence.

The engine is a fake (tests/serving/fakes.py) so these run in seconds; everything else is
real (the tiny model's tokenizer and chat template, the state file, Qdrant local mode).
The same capabilities run against the real vLLM engine in test_server.py.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from transformers import AutoTokenizer

from serving.app import create_app
from serving.engine.settings import EngineSettings
from serving.settings import DomainSpec, LimitSettings
from tests.serving.conftest import ADMIN, CHAT, retrieval_settings, serving_settings
from tests.serving.fakes import FakeEngine


@contextmanager
def running_app(
    srv_model: Path,
    root: Path,
    data: Path,
    qdrant: Path | None = None,
    prompt_layout: str = "auto",
    **changes,
) -> Iterator[tuple[TestClient, FakeEngine]]:
    engine = FakeEngine()
    settings = serving_settings(root, data, **changes)
    app = create_app(
        settings,
        retrieval_settings(qdrant or data / "qdrant"),
        srv_model,
        engine=engine,
        prompt_layout=prompt_layout,
    )
    with TestClient(app) as client:
        yield client, engine


@pytest.fixture
def api(srv_model: Path, srv_adapters_root: Path, tmp_path: Path):
    limits = LimitSettings(max_upload_bytes=1 << 20)
    with running_app(srv_model, srv_adapters_root, tmp_path / "data", limits=limits) as app:
        yield app


@contextmanager
def app_with(
    srv_model: Path, root: Path, tmp_path_factory: pytest.TempPathFactory, name: str,
    *setup: tuple[str, dict],
) -> Iterator[TestClient]:
    """A test module's own app (data under a fresh folder), set up through the admin API."""
    data = tmp_path_factory.mktemp(name) / "data"
    with running_app(srv_model, root, data) as (client, _):
        for path, body in setup:
            reply = client.post(path, headers=ADMIN, json=body)
            assert reply.status_code < 300, reply.text
        yield client


def chat_body(model: str = "base", content: str = "hello there", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def assert_error(response, status: int, param: str | None = "__any__", code: str | None = None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param != "__any__":
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error


# Auth --------------------------------------------------------------------------------------


def test_auth_scopes(api) -> None:
    client, _ = api
    assert_error(client.post("/v1/chat/completions", json=chat_body()), 401, code="missing_api_key")
    wrong = {"Authorization": "Bearer not-a-real-key-123"}
    assert_error(client.get("/v1/models", headers=wrong), 401, code="invalid_api_key")
    assert_error(client.get("/admin/adapters", headers=CHAT), 403, code="insufficient_scope")
    assert_error(client.post("/admin/domains", json={"name": "x"}, headers=CHAT), 403)
    assert client.get("/admin/adapters", headers=ADMIN).status_code == 200
    assert client.get("/v1/models", headers=ADMIN).status_code == 200  # admin implies chat
    assert client.post("/v1/chat/completions", json=chat_body(), headers=CHAT).status_code == 200
    # Health, readiness and metrics need no key.
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json()["ready"] is True
    assert client.get("/metrics").status_code == 200


def test_open_mode_warns_and_serves(srv_model, srv_adapters_root, tmp_path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="lorag.serving")
    with running_app(srv_model, srv_adapters_root, tmp_path / "d", keys=False) as (client, _):
        assert client.post("/v1/chat/completions", json=chat_body()).status_code == 200
        assert client.get("/admin/adapters").status_code == 200
    assert any("NO API KEYS" in record.getMessage() for record in caplog.records)


# Bad input ---------------------------------------------------------------------------------


def test_bad_chat_requests_get_openai_errors(api) -> None:
    client, engine = api
    post = lambda body, **kw: client.post("/v1/chat/completions", headers=CHAT, json=body, **kw)
    raw = client.post(
        "/v1/chat/completions",
        headers={**CHAT, "content-type": "application/json"},
        content=b'{"model": "base", "messages": [',
    )
    assert "JSON" in assert_error(raw, 400)["message"]
    assert_error(post({"model": "base"}), 400, param="messages")
    assert_error(post({"model": "base", "messages": []}), 400, param="messages")
    assert_error(post(chat_body(messages=None) | {"messages": "hi"}), 400, param="messages")
    many = [{"role": "user", "content": "x"}] * 65
    assert_error(post({"model": "base", "messages": many}), 400, param="messages")
    assert_error(post(chat_body(max_tokens=10**6)), 400, param="max_tokens")
    assert_error(post(chat_body(max_completion_tokens=10**6)), 400, param="max_completion_tokens")
    assert_error(post(chat_body(max_tokens=0)), 400, param="max_tokens")
    assert_error(post(chat_body(temperature=7)), 400, param="temperature")
    assert_error(post(chat_body(n=2)), 400, param="n")
    assert_error(post(chat_body(stop=["ok", ""])), 400, param="stop")
    assert_error(post(chat_body("no-such-model")), 404, param="model", code="model_not_found")
    bad_role = {"model": "base", "messages": [{"role": "tool", "content": "x"}]}
    assert_error(post(bad_role), 400)
    late_system = {
        "model": "base",
        "messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}],
    }
    assert_error(post(late_system), 400, param="messages.1.role")
    only_system = {"model": "base", "messages": [{"role": "system", "content": "b"}]}
    assert_error(post(only_system), 400, param="messages")
    assert_error(post(chat_body(lorag={"retrieval": True})), 400, param="lorag.retrieval")
    assert_error(post(chat_body(lorag={"adapter": True})), 400, param="lorag.adapter")
    assert_error(post(chat_body(lorag={"typo": 1})), 400, param="lorag.typo")
    assert_error(post(chat_body(content="word " * 3000)), 400, code="context_length_exceeded")
    huge = chat_body(content="x" * (2 << 20))
    assert_error(post(huge), 413, code="request_too_large")
    assert_error(client.get("/v1/nothing-here", headers=CHAT), 404)
    assert_error(client.delete("/v1/models", headers=CHAT), 405)
    assert engine.started_requests == 0  # none of them reached the engine


def test_bad_adapter_loads_are_refused(api, srv_adapters_root: Path) -> None:
    client, _ = api
    load = lambda path, name="x": client.post(
        "/admin/adapters", headers=ADMIN, json={"name": name, "path": path}
    )
    assert "'..'" in assert_error(load("../outside"), 400, param="path")["message"]
    assert_error(load("acme/../../etc"), 400, param="path", code="invalid_adapter_path")
    assert_error(load(str(srv_adapters_root / "other")), 400, code="invalid_adapter_path")
    assert "outside" in assert_error(load("escape"), 400, param="path")["message"]
    assert_error(load("does-not-exist"), 400, code="invalid_adapter_path")
    assert_error(load("acme"), 400, code="invalid_adapter_path")  # a folder of adapters
    assert (
        "manifest" in assert_error(load("no-manifest"), 400, code="incompatible_adapter")["message"]
    )
    assert (
        "fingerprint" in assert_error(load("foreign"), 400, code="incompatible_adapter")["message"]
    )
    assert "prompt format" in assert_error(load("old-format"), 400)["message"]
    assert_error(load("other", name="bad name!"), 400, param="name")
    assert_error(load("other", name="base"), 400, param="name")
    assert client.get("/admin/adapters", headers=ADMIN).json()["data"] == []


# Adapters, domains, routing ----------------------------------------------------------------


def test_adapter_lifecycle_and_domain_routing(api) -> None:
    client, engine = api
    loaded = client.post("/admin/adapters", headers=ADMIN, json={"name": "acme", "path": "acme/v1"})
    assert loaded.status_code == 201, loaded.text
    assert loaded.json() | {"in_flight": 0} == {
        "name": "acme",
        "version": 1,
        "path": "acme/v1",
        "in_flight": 0,
        "draining_versions": [],
        "replaced_version": None,
    }
    created = client.post(
        "/admin/domains",
        headers=ADMIN,
        json={"name": "acme", "adapter": "acme", "system_prompt": "You are ACME's assistant."},
    )
    assert created.status_code == 201, created.text
    assert_error(client.post("/admin/domains", headers=ADMIN, json={"name": "acme"}), 409)
    assert_error(client.post("/admin/domains", headers=ADMIN, json={"name": "Bad.Name"}), 400)
    assert_error(client.post("/admin/domains", headers=ADMIN, json={"name": "base"}), 400)

    reply = client.post("/v1/chat/completions", headers=CHAT, json=chat_body("acme")).json()
    assert reply["choices"][0]["message"]["content"] == "acme@v1 says hello"
    assert reply["lorag"] == {
        "domain": "acme",
        "adapter": "acme",
        "adapter_version": 1,
        "index_version": None,
    }
    assert reply["sources"] == []
    assert reply["usage"]["completion_tokens"] == 3
    # The system prompt went through the chat template into the prompt the engine got.
    tokenizer = AutoTokenizer.from_pretrained(client.app.state.ctx.model_path)
    assert "You are ACME's assistant." in tokenizer.decode(engine.prompts[-1])

    base = chat_body("acme", lorag={"adapter": False})
    reply = client.post("/v1/chat/completions", headers=CHAT, json=base).json()
    assert reply["choices"][0]["message"]["content"] == "base says hello"
    assert reply["lorag"]["adapter"] is None
    direct = client.post("/v1/chat/completions", headers=CHAT, json=chat_body("acme")).json()
    assert direct["lorag"]["domain"] == "acme"  # a domain wins over an adapter of that name

    replaced = client.post(
        "/admin/adapters", headers=ADMIN, json={"name": "acme", "path": "acme/v2"}
    )
    assert replaced.status_code == 200
    assert replaced.json()["version"] == 2 and replaced.json()["replaced_version"] == 1
    reply = client.post("/v1/chat/completions", headers=CHAT, json=chat_body("acme")).json()
    assert reply["choices"][0]["message"]["content"] == "acme@v2 says hello"

    models = client.get("/v1/models", headers=CHAT).json()["data"]
    by_id = {m["id"]: m["lorag"] for m in models}
    assert sorted(m["id"] for m in models) == ["acme", "tiny-llama"]  # unique ids
    assert by_id["tiny-llama"] == {"kind": "base", "aliases": ["base"]}
    assert by_id["acme"]["kind"] == "domain" and by_id["acme"]["adapter_version"] == 2

    patched = client.patch("/admin/domains/acme", headers=ADMIN, json={"adapter": None})
    assert patched.status_code == 200 and patched.json()["adapter"] is None
    reply = client.post("/v1/chat/completions", headers=CHAT, json=chat_body("acme")).json()
    assert reply["choices"][0]["message"]["content"] == "base says hello"
    assert_error(client.patch("/admin/domains/nope", headers=ADMIN, json={}), 404)

    assert client.delete("/admin/adapters/acme", headers=ADMIN).json()["deleted"] is True
    assert_error(client.delete("/admin/adapters/acme", headers=ADMIN), 404)
    assert client.delete("/admin/domains/acme", headers=ADMIN).status_code == 200
    assert_error(client.post("/v1/chat/completions", headers=CHAT, json=chat_body("acme")), 404)


def test_domain_whose_adapter_is_not_loaded(api) -> None:
    client, _ = api
    client.post("/admin/domains", headers=ADMIN, json={"name": "orphan", "adapter": "gone"})
    reply = client.post("/v1/chat/completions", headers=CHAT, json=chat_body("orphan"))
    assert_error(reply, 409, code="adapter_not_loaded")
    reply = client.post(
        "/v1/chat/completions", headers=CHAT, json=chat_body("orphan", lorag={"adapter": False})
    )
    assert reply.status_code == 200


def test_streaming_chunks_follow_openai_format(api) -> None:
    client, _ = api
    client.post("/admin/adapters", headers=ADMIN, json={"name": "other", "path": "other"})
    body = chat_body("other", stream=True, stream_options={"include_usage": True})
    with client.stream("POST", "/v1/chat/completions", headers=CHAT, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "other@v1 says hello"
    final = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(final) == 1 and final[0]["choices"][0]["finish_reason"] == "stop"
    assert final[0]["lorag"]["adapter_version"] == 1 and final[0]["sources"] == []
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3


# Documents ---------------------------------------------------------------------------------


def test_documents_upload_list_delete(api, srv_documents) -> None:
    client, _ = api
    client.post("/admin/domains", headers=ADMIN, json={"name": "docs", "index": True})
    upload = lambda path, data: client.post(
        "/admin/domains/docs/documents",
        headers=ADMIN,
        files={"file": ("ignored.md", data, "text/markdown")},
        data={"path": path},
    )
    saved = upload("warranty/policy.md", srv_documents["warranty/policy.md"])
    assert saved.status_code == 201, saved.text
    assert saved.json()["path"] == "warranty/policy.md"
    assert_error(upload("../escape.md", b"x"), 400, param="path")
    assert_error(upload("/abs.md", b"x"), 400, param="path")
    assert_error(upload("big.md", b"x" * (2 << 20)), 413, code="request_too_large")
    assert_error(upload("big.md", b"x" * ((1 << 20) + 1)), 413, code="document_too_large")
    assert_error(
        client.post("/admin/domains/nope/documents", headers=ADMIN, files={"file": ("a.md", b"x")}),
        404,
    )
    listed = client.get("/admin/domains/docs/documents", headers=ADMIN).json()["data"]
    assert [d["path"] for d in listed] == ["warranty/policy.md"]
    assert client.get("/admin/domains/docs", headers=ADMIN).json()["documents"] == 1
    assert_error(client.delete("/admin/domains/docs/documents/missing.md", headers=ADMIN), 404)
    gone = client.delete("/admin/domains/docs/documents/warranty/policy.md", headers=ADMIN)
    assert gone.status_code == 200
    assert client.get("/admin/domains/docs/documents", headers=ADMIN).json()["data"] == []
    assert_error(
        client.post("/admin/domains/docs/reindex", headers=ADMIN), 409, code="no_documents"
    )
    assert_error(client.get("/admin/jobs/job-nope", headers=ADMIN), 404)
    # A domain with index: true but no index built yet: chat says so, and search too.
    reply = client.post("/v1/chat/completions", headers=CHAT, json=chat_body("docs"))
    assert "reindex" in assert_error(reply, 409, code="index_not_found")["message"]
    search = lambda body: client.post("/v1/search", headers=CHAT, json=body)
    assert_error(search({"domain": "docs", "query": "x"}), 404, code="index_not_found")
    assert_error(search({"domain": "docs", "query": "   "}), 400, code="invalid_search")
    assert_error(search({"domain": "Bad Name", "query": "x"}), 400, param="domain")
    assert_error(search({"domain": "docs", "query": "x", "k": 500}), 400, param="k")
    # Deleting with purge removes the documents too.
    upload("keep.md", b"# Keep\n")
    folder = client.app.state.ctx.documents.folder("docs")
    assert (folder / "keep.md").is_file()
    deleted = client.delete("/admin/domains/docs?purge=true", headers=ADMIN)
    assert deleted.json() == {"name": "docs", "deleted": True, "purged": True}
    assert not folder.exists()


# State: restarts, seeds, replicas ----------------------------------------------------------


def test_restart_restores_domains_and_adapter_versions(srv_model, srv_adapters_root, tmp_path):
    data = tmp_path / "data"
    with running_app(srv_model, srv_adapters_root, data) as (client, _):
        client.post("/admin/adapters", headers=ADMIN, json={"name": "acme", "path": "acme/v1"})
        client.post("/admin/adapters", headers=ADMIN, json={"name": "acme", "path": "acme/v2"})
        client.post("/admin/adapters", headers=ADMIN, json={"name": "other", "path": "other"})
        client.delete("/admin/adapters/other", headers=ADMIN)
        client.post(
            "/admin/domains", headers=ADMIN, json={"name": "acme", "adapter": "acme", "k": 2}
        )
    with running_app(srv_model, srv_adapters_root, data) as (client, engine):
        adapters = client.get("/admin/adapters", headers=ADMIN).json()["data"]
        assert [(a["name"], a["version"], a["path"]) for a in adapters] == [("acme", 2, "acme/v2")]
        assert [a.key for a in engine.adapters()] == ["acme@v2"]
        domain = client.get("/admin/domains/acme", headers=ADMIN).json()
        assert domain["adapter"] == "acme" and domain["k"] == 2
        reply = client.post("/v1/chat/completions", headers=CHAT, json=chat_body("acme")).json()
        assert reply["lorag"]["adapter_version"] == 2
        # Version numbers continue after a restart (and after an unload).
        again = client.post(
            "/admin/adapters", headers=ADMIN, json={"name": "other", "path": "other"}
        )
        assert again.json()["version"] == 2


def test_seeds_from_settings(srv_model, srv_adapters_root, tmp_path) -> None:
    seeds = {
        "domains": {"seeded": DomainSpec(adapter="acme", system_prompt="Seeded.")},
        "adapters": {"acme": "acme/v1"},
    }
    with running_app(srv_model, srv_adapters_root, tmp_path / "d", **seeds) as (client, _):
        reply = client.post("/v1/chat/completions", headers=CHAT, json=chat_body("seeded")).json()
        assert reply["choices"][0]["message"]["content"] == "acme@v1 says hello"
        client.patch("/admin/domains/seeded", headers=ADMIN, json={"system_prompt": "Changed."})
    # The stored state wins over the seeds at the next start.
    with running_app(srv_model, srv_adapters_root, tmp_path / "d", **seeds) as (client, _):
        domain = client.get("/admin/domains/seeded", headers=ADMIN).json()
        assert domain["system_prompt"] == "Changed."


def test_replicas_converge_on_the_shared_state(srv_model, srv_adapters_root, tmp_path) -> None:
    data = tmp_path / "shared"
    with (
        running_app(srv_model, srv_adapters_root, data, qdrant=tmp_path / "q1") as (one, _),
        running_app(srv_model, srv_adapters_root, data, qdrant=tmp_path / "q2") as (two, engine),
    ):
        one.post("/admin/adapters", headers=ADMIN, json={"name": "acme", "path": "acme/v1"})
        one.post("/admin/domains", headers=ADMIN, json={"name": "acme", "adapter": "acme"})

        def served_by_two() -> list[str]:
            return [a.key for a in engine.adapters()]

        _wait_until(lambda: served_by_two() == ["acme@v1"])
        reply = two.post("/v1/chat/completions", headers=CHAT, json=chat_body("acme")).json()
        assert reply["choices"][0]["message"]["content"] == "acme@v1 says hello"
        one.post("/admin/adapters", headers=ADMIN, json={"name": "acme", "path": "acme/v2"})
        _wait_until(lambda: served_by_two() == ["acme@v2"])
        one.delete("/admin/adapters/acme", headers=ADMIN)
        _wait_until(lambda: served_by_two() == [])


def _wait_until(condition, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the replica did not converge in time"
        time.sleep(0.05)


# Operations --------------------------------------------------------------------------------


def test_metrics_and_audit_line(api, caplog) -> None:
    client, _ = api
    caplog.set_level(logging.INFO, logger="lorag.audit")
    client.post("/admin/adapters", headers=ADMIN, json={"name": "acme", "path": "acme/v1"})
    client.post("/admin/adapters", headers=ADMIN, json={"name": "acme", "path": "acme/v2"})
    response = client.post("/v1/chat/completions", headers=CHAT, json=chat_body("acme"))
    audit = [json.loads(r.getMessage()) for r in caplog.records if r.name == "lorag.audit"]
    assert len(audit) == 1
    line = audit[0]
    assert line["request_id"] == response.json()["id"] == response.headers["x-request-id"]
    assert (line["adapter"], line["adapter_version"], line["domain"]) == ("acme", 2, None)
    assert line["status"] == "ok" and line["completion_tokens"] == 3
    assert line["api_key"] == "tester" and line["latency_s"] >= 0
    text = client.get("/metrics").text
    assert 'lorag_chat_requests_total{model="acme",status="ok"} 1.0' in text
    assert 'lorag_adapter_loads_total{adapter="acme"} 2.0' in text
    assert 'lorag_adapter_swaps_total{adapter="acme"} 1.0' in text
    assert 'lorag_completion_tokens_total{model="acme"} 3.0' in text
    assert 'lorag_http_requests_total{route="/v1/chat/completions",status="200"}' in text
    assert "lorag_chat_latency_seconds_bucket" in text


def test_limits_are_configurable(srv_model, srv_adapters_root, tmp_path) -> None:
    limits = LimitSettings(max_messages=2, max_tokens=5, max_body_bytes=2048)
    with running_app(srv_model, srv_adapters_root, tmp_path / "d", limits=limits) as (client, _):
        post = lambda body: client.post("/v1/chat/completions", headers=CHAT, json=body)
        three = [{"role": "user", "content": "x"}] * 3
        assert_error(post({"model": "base", "messages": three}), 400, param="messages")
        assert_error(post(chat_body(max_tokens=6)), 400, param="max_tokens")
        assert post(chat_body(max_tokens=5)).status_code == 200
        assert_error(post(chat_body(content="y" * 3000)), 413)


def test_transformers_engine_fallback(srv_model, srv_adapters_root, tmp_path) -> None:
    """`engine.kind: transformers`: the app creates and stops the engine itself."""
    settings = serving_settings(
        srv_adapters_root,
        tmp_path / "d",
        engine=EngineSettings(kind="transformers", max_adapters=2, max_lora_rank=8),
    )
    app = create_app(settings, retrieval_settings(tmp_path / "q"), srv_model)
    with TestClient(app) as client:
        assert client.get("/ready").json()["engine"] == "transformers"
        body = chat_body("base", max_tokens=6)
        base = client.post("/v1/chat/completions", headers=CHAT, json=body).json()
        assert base["usage"]["completion_tokens"] > 0
        client.post("/admin/adapters", headers=ADMIN, json={"name": "acme", "path": "acme/v1"})
        adapted = client.post(
            "/v1/chat/completions", headers=CHAT, json={**body, "model": "acme"}
        ).json()
        assert adapted["lorag"]["adapter_version"] == 1
        assert (
            adapted["choices"][0]["message"]["content"] != base["choices"][0]["message"]["content"]
        )
        with client.stream(
            "POST", "/v1/chat/completions", headers=CHAT, json={**body, "stream": True}
        ) as response:
            lines = [line for line in response.iter_lines() if line]
        pieces = [json.loads(line[6:]) for line in lines[:-1]]
        streamed = "".join(p["choices"][0]["delta"].get("content") or "" for p in pieces)
        assert streamed == base["choices"][0]["message"]["content"]
