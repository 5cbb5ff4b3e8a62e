"""No input gets a 5xx: a table of hostile requests against the app on the scripted engine.

Each row is sent as raw bytes (a lone surrogate can only travel as a JSON `\\ud800` escape)
and must get a status under 500 with, for errors, the OpenAI error shape.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from tests.serving.conftest import (
    ADMIN,
    CHAT,
    LoopThread,
    retrieval_settings,
    serving_settings,
)
from tests.serving.fakes import FakeEngine
from tests.serving.test_api import app_with, assert_error, chat_body
from tests.support.live_server import RunningServer

S = "\ud800"  # a lone UTF-16 surrogate: valid in JSON's escapes, not encodable as UTF-8
DEEP = 5000  # nesting deeper than Python's JSON parser's recursion limit

CHAT_URL = "/v1/chat/completions"


def raw(body: Any) -> bytes:
    """JSON bytes with non-ASCII escaped, as a client's encoder sends a lone surrogate."""
    return json.dumps(body).encode("ascii")


def nested(depth: int) -> bytes:
    return b'{"model": "base", "messages": ' + b"[" * depth + b"]" * depth + b"}"


def msg(content: Any, role: Any = "user") -> dict[str, Any]:
    return {"model": "base", "messages": [{"role": role, "content": content}]}


# (id, method, path, body (JSON value, or bytes sent as they are), headers, param expected)
ANY = "__any__"
SURROGATES: list[tuple[str, str, str, Any, dict[str, str], str | None]] = [
    ("chat-content", "POST", CHAT_URL, msg(S), CHAT, "messages.0.content"),
    ("chat-content-mid", "POST", CHAT_URL, msg("ok " + S + " ok"), CHAT, "messages.0.content"),
    ("chat-content-rag", "POST", CHAT_URL, msg(S) | {"model": "docs"}, CHAT, "messages.0.content"),
    (
        "chat-part",
        "POST",
        CHAT_URL,
        msg([{"type": "text", "text": "a"}, {"type": "text", "text": S}]),
        CHAT,
        "messages.0.content.1.text",
    ),
    ("chat-system", "POST", CHAT_URL, msg(S, role="system"), CHAT, "messages.0.content"),
    ("chat-role", "POST", CHAT_URL, msg("hi", role=S), CHAT, "messages.0.role"),
    ("chat-model", "POST", CHAT_URL, chat_body(S), CHAT, "model"),
    ("chat-stop", "POST", CHAT_URL, chat_body(stop=S), CHAT, "stop"),
    ("chat-stop-list", "POST", CHAT_URL, chat_body(stop=["x", S]), CHAT, "stop.1"),
    ("chat-user", "POST", CHAT_URL, chat_body(user=S), CHAT, "user"),
    ("chat-lorag-key", "POST", CHAT_URL, chat_body(lorag={S: 1}), CHAT, "lorag.<key>"),
    ("search-query", "POST", "/v1/search", {"domain": "docs", "query": S}, CHAT, "query"),
    ("search-domain", "POST", "/v1/search", {"domain": S, "query": "x"}, CHAT, "domain"),
    ("search-extra", "POST", "/v1/search", {"domain": "docs", "query": "x", S: 1}, CHAT, ANY),
    (
        "feedback-correction",
        "POST",
        "/v1/feedback",
        {"response_id": "chatcmpl-x", "correction": S},
        CHAT,
        "correction",
    ),
    (
        "feedback-comment",
        "POST",
        "/v1/feedback",
        {"response_id": "chatcmpl-x", "rating": 1, "comment": S},
        CHAT,
        "comment",
    ),
    ("feedback-id", "POST", "/v1/feedback", {"response_id": S, "rating": 1}, CHAT, "response_id"),
    ("adapter-path", "POST", "/admin/adapters", {"name": "x", "path": S}, ADMIN, "path"),
    ("adapter-name", "POST", "/admin/adapters", {"name": S, "path": "other"}, ADMIN, "name"),
    ("domain-name", "POST", "/admin/domains", {"name": S}, ADMIN, "name"),
    (
        "domain-prompt",
        "POST",
        "/admin/domains",
        {"name": "fresh", "system_prompt": S},
        ADMIN,
        "system_prompt",
    ),
    ("domain-patch", "PATCH", "/admin/domains/docs", {"system_prompt": S}, ADMIN, "system_prompt"),
]

BIG = 10**30
OTHERS: list[tuple[str, str, str, Any, dict[str, str]]] = [
    # Surrogates as raw CESU-8 bytes (Python's JSON decoder lets them through) and bad UTF-8.
    (
        "cesu-bytes",
        "POST",
        CHAT_URL,
        b'{"model":"base","messages":[{"role":"user","content":"\xed\xa0\x80"}]}',
        CHAT,
    ),
    (
        "bad-utf8",
        "POST",
        CHAT_URL,
        b'{"model":"base","messages":[{"role":"user","content":"\xff\xfe"}]}',
        CHAT,
    ),
    ("surrogate-ignored-key", "POST", CHAT_URL, chat_body() | {S: S}, CHAT),  # ignored
    # NUL characters.
    ("nul-content", "POST", CHAT_URL, msg("a\x00b"), CHAT),
    ("nul-model", "POST", CHAT_URL, chat_body("\x00"), CHAT),
    ("nul-query", "POST", "/v1/search", {"domain": "docs", "query": "\x00"}, CHAT),
    ("nul-adapter-path", "POST", "/admin/adapters", {"name": "x", "path": "a\x00b"}, ADMIN),
    ("nul-domain-path", "GET", "/admin/domains/a%00b", None, ADMIN),
    ("nul-document", "DELETE", "/admin/domains/docs/documents/a%00b.md", None, ADMIN),
    ("nul-export-since", "GET", "/admin/feedback/export?since=%00", None, ADMIN),
    ("nul-feedback", "POST", "/v1/feedback", {"response_id": "\x00", "correction": "\x00"}, CHAT),
    # Very long strings.
    ("long-content", "POST", CHAT_URL, msg("lorem ipsum " * 60_000), CHAT),
    ("long-model", "POST", CHAT_URL, chat_body("m" * 500_000), CHAT),
    ("long-stop", "POST", CHAT_URL, chat_body(stop="s" * 500_000), CHAT),
    ("long-query", "POST", "/v1/search", {"domain": "docs", "query": "q " * 300_000}, CHAT),
    ("long-comment", "POST", "/v1/feedback", {"response_id": "r", "comment": "c" * 10_000}, CHAT),
    ("long-path", "GET", "/admin/domains/" + "d" * 20_000, None, ADMIN),
    # Wrong types.
    ("messages-str", "POST", CHAT_URL, {"model": "base", "messages": "hi"}, CHAT),
    ("messages-ints", "POST", CHAT_URL, {"model": "base", "messages": [1, 2]}, CHAT),
    ("messages-lists", "POST", CHAT_URL, {"model": "base", "messages": [[]]}, CHAT),
    ("content-int", "POST", CHAT_URL, msg(5), CHAT),
    ("content-dict", "POST", CHAT_URL, msg({"text": "x"}), CHAT),
    ("part-no-type", "POST", CHAT_URL, msg([{"text": "x"}]), CHAT),
    ("model-int", "POST", CHAT_URL, chat_body() | {"model": 5}, CHAT),
    ("model-null", "POST", CHAT_URL, chat_body() | {"model": None}, CHAT),
    ("stream-list", "POST", CHAT_URL, chat_body(stream=[]), CHAT),
    ("temperature-str", "POST", CHAT_URL, chat_body(temperature="hot"), CHAT),
    ("max-tokens-float", "POST", CHAT_URL, chat_body(max_tokens=1.5), CHAT),
    ("stop-int", "POST", CHAT_URL, chat_body(stop=5), CHAT),
    ("stop-many", "POST", CHAT_URL, chat_body(stop=["x"] * 100), CHAT),
    ("lorag-str", "POST", CHAT_URL, chat_body(lorag="x"), CHAT),
    ("stream-options-str", "POST", CHAT_URL, chat_body(stream=True, stream_options="x"), CHAT),
    ("search-k-str", "POST", "/v1/search", {"domain": "docs", "query": "x", "k": "all"}, CHAT),
    ("rating-str", "POST", "/v1/feedback", {"response_id": "r", "rating": "1"}, CHAT),
    ("rating-bool", "POST", "/v1/feedback", {"response_id": "r", "rating": True}, CHAT),
    ("domain-k-str", "PATCH", "/admin/domains/docs", {"k": "x"}, ADMIN),
    ("adapter-list", "POST", "/admin/adapters", [], ADMIN),
    # Deeply nested JSON, parseable and not.
    ("nested-400", "POST", CHAT_URL, nested(400), CHAT),
    ("nested-deep", "POST", CHAT_URL, nested(DEEP), CHAT),
    (
        "nested-extra",
        "POST",
        CHAT_URL,
        raw(chat_body())[:-1] + b', "x": ' + nested(900) + b"}",
        CHAT,
    ),
    (
        "nested-search",
        "POST",
        "/v1/search",
        b'{"domain": ' + b"[" * DEEP + b"]" * DEEP + b"}",
        CHAT,
    ),
    # Bodies that are not JSON objects, or none.
    ("not-json", "POST", CHAT_URL, b"hello", CHAT),
    ("truncated", "POST", CHAT_URL, b'{"model": "base", "messages": [', CHAT),
    ("binary", "POST", CHAT_URL, bytes(range(256)), CHAT),
    ("empty", "POST", CHAT_URL, b"", CHAT),
    ("empty-search", "POST", "/v1/search", b"", CHAT),
    ("empty-feedback", "POST", "/v1/feedback", b"", CHAT),
    ("empty-admin", "POST", "/admin/domains", b"", ADMIN),
    ("json-null", "POST", CHAT_URL, b"null", CHAT),
    ("json-list", "POST", CHAT_URL, b"[]", CHAT),
    ("json-string", "POST", CHAT_URL, b'"x"', CHAT),
    ("json-nan", "POST", CHAT_URL, raw(chat_body())[:-1] + b', "temperature": NaN}', CHAT),
    ("json-inf", "POST", CHAT_URL, raw(chat_body())[:-1] + b', "max_tokens": 1e400}', CHAT),
    (
        "json-digits",
        "POST",
        CHAT_URL,
        raw(chat_body())[:-1] + b', "seed": 1' + b"0" * 5000 + b"}",
        CHAT,
    ),
    (
        "form",
        "POST",
        CHAT_URL,
        b"model=base",
        {**CHAT, "content-type": "application/x-www-form-urlencoded"},
    ),
    ("text-plain", "POST", CHAT_URL, raw(chat_body()), {**CHAT, "content-type": "text/plain"}),
    (
        "multipart-no-file",
        "POST",
        "/admin/domains/docs/documents",
        b"--x--",
        {**ADMIN, "content-type": "multipart/form-data; boundary=x"},
    ),
    # Huge and negative numbers.
    ("max-tokens-big", "POST", CHAT_URL, chat_body(max_tokens=BIG), CHAT),
    ("max-completion-big", "POST", CHAT_URL, chat_body(max_completion_tokens=BIG), CHAT),
    ("temperature-big", "POST", CHAT_URL, chat_body(temperature=1e308), CHAT),
    ("top-p-big", "POST", CHAT_URL, chat_body(top_p=BIG), CHAT),
    ("seed-big", "POST", CHAT_URL, chat_body(seed=BIG), CHAT),
    ("seed-negative-big", "POST", CHAT_URL, chat_body(seed=-BIG), CHAT),
    ("n-big", "POST", CHAT_URL, chat_body(n=BIG), CHAT),
    ("lorag-k-big", "POST", CHAT_URL, chat_body("docs", lorag={"k": BIG}), CHAT),
    ("search-k-big", "POST", "/v1/search", {"domain": "docs", "query": "x", "k": BIG}, CHAT),
    ("rating-big", "POST", "/v1/feedback", {"response_id": "r", "rating": BIG}, CHAT),
    ("domain-k-big", "PATCH", "/admin/domains/docs", {"k": BIG}, ADMIN),
    ("export-rating-big", "GET", f"/admin/feedback/export?min_rating={BIG}", None, ADMIN),
    ("max-tokens-negative", "POST", CHAT_URL, chat_body(max_tokens=-1), CHAT),
    ("temperature-negative", "POST", CHAT_URL, chat_body(temperature=-0.5), CHAT),
    ("top-p-zero", "POST", CHAT_URL, chat_body(top_p=0), CHAT),
    ("n-negative", "POST", CHAT_URL, chat_body(n=-1), CHAT),
    ("lorag-k-negative", "POST", CHAT_URL, chat_body("docs", lorag={"k": -3}), CHAT),
    ("search-k-zero", "POST", "/v1/search", {"domain": "docs", "query": "x", "k": 0}, CHAT),
    ("rating-negative", "POST", "/v1/feedback", {"response_id": "r", "rating": -100}, CHAT),
    ("domain-k-negative", "PATCH", "/admin/domains/docs", {"k": -1}, ADMIN),
    # Roles and message lists.
    ("role-tool", "POST", CHAT_URL, msg("x", role="tool"), CHAT),
    ("role-empty", "POST", CHAT_URL, msg("x", role=""), CHAT),
    ("role-null", "POST", CHAT_URL, msg("x", role=None), CHAT),
    ("role-int", "POST", CHAT_URL, msg("x", role=1), CHAT),
    ("role-missing", "POST", CHAT_URL, {"model": "base", "messages": [{"content": "x"}]}, CHAT),
    ("only-assistant", "POST", CHAT_URL, msg("x", role="assistant"), CHAT),
    ("messages-empty", "POST", CHAT_URL, {"model": "base", "messages": []}, CHAT),
    ("messages-null", "POST", CHAT_URL, {"model": "base", "messages": None}, CHAT),
    ("content-null", "POST", CHAT_URL, msg(None), CHAT),
    ("content-empty", "POST", CHAT_URL, msg(""), CHAT),
    ("model-empty", "POST", CHAT_URL, chat_body(""), CHAT),
    # Headers and methods.
    ("auth-garbage", "POST", CHAT_URL, chat_body(), {"Authorization": "Bearer \x7f\x01"}),
    ("auth-scheme", "GET", "/v1/models", None, {"Authorization": "Basic Zm9vOmJhcg=="}),
    ("wrong-method", "PUT", CHAT_URL, chat_body(), CHAT),
    ("unknown-route", "POST", "/v1/completions", chat_body(), CHAT),
]


@pytest.fixture(scope="module")
def hostile_api(
    srv_model: Path, srv_adapters_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """One app for the whole table, with a domain `docs` whose retrieval is on (no index)."""
    domain = ("/admin/domains", {"name": "docs", "index": True})
    with app_with(srv_model, srv_adapters_root, tmp_path_factory, "hostile", domain) as app:
        yield app


def send(client: TestClient, method: str, path: str, body: Any, headers: dict[str, str]):
    if body is None:
        return client.request(method, path, headers=headers)
    content = body if isinstance(body, bytes) else raw(body)
    kind = {"content-type": "application/json"} if "content-type" not in headers else {}
    return client.request(method, path, headers={**kind, **headers}, content=content)


def assert_no_server_error(response) -> None:
    assert response.status_code < 500, response.text[:2000]
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert error["message"] and error["type"]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "param"),
    [pytest.param(*row[1:], id=row[0]) for row in SURROGATES],
)
def test_text_that_is_not_utf8_is_a_400_naming_the_field(
    hostile_api: TestClient, method: str, path: str, body: Any, headers: dict, param: str
) -> None:
    response = send(hostile_api, method, path, body, headers)
    error = assert_error(response, 400, param=param)
    if param != ANY:
        assert "UTF-8" in error["message"], error
    response.content.decode("utf-8")  # the answer itself is valid UTF-8


@pytest.mark.parametrize(
    ("method", "path", "body", "headers"), [pytest.param(*row[1:], id=row[0]) for row in OTHERS]
)
def test_hostile_input_gets_no_5xx(
    hostile_api: TestClient, method: str, path: str, body: Any, headers: dict
) -> None:
    assert_no_server_error(send(hostile_api, method, path, body, headers))


def test_app_still_serves_after_the_table(hostile_api: TestClient) -> None:
    reply = hostile_api.post(CHAT_URL, headers=CHAT, json=chat_body())
    assert reply.status_code == 200, reply.text


# Unexpected errors -------------------------------------------------------------------------


def _explode(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("a bug nobody foresaw")


def test_unexpected_error_is_an_openai_shaped_500(hostile_api: TestClient, monkeypatch) -> None:
    monkeypatch.setattr(hostile_api.app.state.chat, "prepare", _explode)
    error = assert_error(hostile_api.post(CHAT_URL, headers=CHAT, json=chat_body()), 500)
    assert error["type"] == "server_error" and "server log" in error["message"]
    assert "a bug nobody foresaw" not in error["message"]  # no internals to the client
    text = hostile_api.get("/metrics").text
    assert 'lorag_http_requests_total{route="/v1/chat/completions",status="500"} 1.0' in text


@pytest.fixture(scope="module")
def hostile_server(
    srv_model: Path, srv_adapters_root: Path, srv_loop: LoopThread, tmp_path_factory
) -> Iterator[RunningServer]:
    """The app behind a real uvicorn server: what a connection sees after an error."""
    data = tmp_path_factory.mktemp("hostile-server") / "data"
    settings = serving_settings(srv_adapters_root, data)
    app = create_app(settings, retrieval_settings(data / "qdrant"), srv_model, engine=FakeEngine())
    server = RunningServer(srv_loop, app)
    yield server
    server.stop()


def _exchange(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, dict, bool]:
    conn.request("POST", CHAT_URL, body, {**CHAT, "content-type": "application/json"})
    response = conn.getresponse()
    return response.status, json.loads(response.read()), response.will_close


def test_errors_keep_the_connection_alive(hostile_server: RunningServer, monkeypatch) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", hostile_server.port, timeout=30)
    try:
        status, reply, closing = _exchange(conn, raw(msg(S)))
        assert (status, reply["error"]["param"], closing) == (400, "messages.0.content", False)
        sock = conn.sock
        monkeypatch.setattr(hostile_server.app.state.chat, "prepare", _explode)
        status, reply, closing = _exchange(conn, raw(chat_body()))
        assert (status, reply["error"]["type"], closing) == (500, "server_error", False)
        monkeypatch.undo()
        status, reply, closing = _exchange(conn, raw(chat_body()))
        assert status == 200 and reply["choices"][0]["message"]["content"] == "base says hello"
        assert conn.sock is sock  # one connection served all three
    finally:
        conn.close()
