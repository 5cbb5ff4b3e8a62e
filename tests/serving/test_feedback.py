"""Feedback on answers and its export as training data.

Most tests run the app on the scripted engine (tests/serving/fakes.py) with the real tiny
model's tokenizer, the real feedback files and the real training loaders; one runs the real
transformers engine behind uvicorn with the official `openai` client and the CLI's
`--server` export. Storage rules (retention, torn lines, concurrent writers) are tested on
the store directly, with several threads and a second process writing to the same files.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from lorag.cli import app as lorag
from lorag.commands import feedback as feedback_commands
from retrieval.results import Hit
from serving.app import create_app
from serving.engine.settings import EngineSettings
from serving.feedback.export import ExportOptions, export_records, parse_since
from serving.feedback.records import (
    Exchange,
    FeedbackEvent,
    UnknownResponseError,
    feedback_folder,
    read_folder,
)
from serving.feedback.store import FeedbackStore
from serving.routers.feedback import SUMMARY_HEADER
from serving.settings import FeedbackSettings
from tests.serving.conftest import (
    ADMIN,
    ADMIN_KEY,
    CHAT,
    CHAT_KEY,
    LoopThread,
    retrieval_settings,
    serving_settings,
)
from tests.serving.fakes import FakeEngine
from tests.support.live_server import RunningServer
from training.data import load_data_file
from training.raft import load_qa_file

ACME_PROMPT = "You are ACME's assistant."


@contextmanager
def running_app(
    srv_model: Path, root: Path, data: Path, qdrant: Path | None = None, **changes
) -> Iterator[tuple[TestClient, FakeEngine]]:
    engine = FakeEngine()
    settings = serving_settings(root, data, **changes)
    qdrant = qdrant or data / "qdrant"
    app = create_app(settings, retrieval_settings(qdrant), srv_model, engine=engine)
    with TestClient(app) as client:
        yield client, engine


def setup_domains(client: TestClient) -> None:
    """acme: adapter `acme` and a system prompt; support: the base model, no prompt."""
    loaded = client.post("/admin/adapters", headers=ADMIN, json={"name": "acme", "path": "acme/v1"})
    assert loaded.status_code == 201, loaded.text
    for body in (
        {"name": "acme", "adapter": "acme", "system_prompt": ACME_PROMPT},
        {"name": "support"},
    ):
        assert client.post("/admin/domains", headers=ADMIN, json=body).status_code == 201


def ask(client: TestClient, model: str, content: str | list[dict], **extra) -> str:
    messages = [{"role": "user", "content": content}] if isinstance(content, str) else content
    reply = client.post(
        "/v1/chat/completions", headers=CHAT, json={"model": model, "messages": messages, **extra}
    )
    assert reply.status_code == 200, reply.text
    return reply.json()["id"]


def rate(client: TestClient, response_id: str, headers: dict | None = None, **body):
    return client.post(
        "/v1/feedback", headers=headers or CHAT, json={"response_id": response_id, **body}
    )


def file_lines(data: Path) -> list[dict]:
    return [
        json.loads(line)
        for path in sorted(feedback_folder(data).glob("*.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


def assert_error(response, status: int, param: str | None = "__any__", code: str | None = None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param != "__any__":
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error


@pytest.fixture
def api(srv_model: Path, srv_adapters_root: Path, tmp_path: Path):
    with running_app(srv_model, srv_adapters_root, tmp_path / "data") as (client, _):
        setup_domains(client)
        yield client, tmp_path / "data"


# The API ---------------------------------------------------------------------------------------


def test_feedback_on_responses_plain_and_streamed(api, monkeypatch) -> None:
    client, data = api
    response_id = ask(client, "acme", "How long is the warranty?")
    first = rate(client, response_id, rating=1, comment="spot on")
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["object"] == "feedback" and body["replaced"] is False
    assert (body["response_id"], body["rating"], body["comment"]) == (response_id, 1, "spot on")
    again = rate(client, response_id, rating=-1, correction="  Two years.  ")
    assert again.status_code == 200 and again.json()["replaced"] is True
    assert again.json()["correction"] == "Two years."

    # A streamed answer can be rated as soon as its stream ends.
    body = {"model": "support", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with client.stream("POST", "/v1/chat/completions", headers=CHAT, json=body) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: {")]
    streamed_id = json.loads(lines[0][6:])["id"]
    assert rate(client, streamed_id, rating=1).status_code == 201

    # An indexed domain: the retrieved sources' doc ids are recorded, not the context.
    client.post("/admin/domains", headers=ADMIN, json={"name": "docs", "index": True})
    hits = [
        Hit("refunds.md", "refunds.md", "Refunds", 0, "Refunds within 14 days.", 0.9, "v7"),
        Hit("shipping.md", "shipping.md", "", 0, "Five business days.", 0.5, "v7"),
    ]

    async def fake_search(domain, query, k, mode, label):  # isolates retrieval (tested elsewhere)
        return hits

    monkeypatch.setattr(client.app.state.ctx.search, "search", fake_search)
    indexed_id = ask(client, "docs", "Refund window?")

    exchanges = {r["response_id"]: r for r in file_lines(data) if r["type"] == "exchange"}
    acme = exchanges[response_id]
    assert acme["messages"] == [{"role": "user", "content": "How long is the warranty?"}]
    assert acme["system_prompt"] == ACME_PROMPT
    assert (acme["domain"], acme["adapter"], acme["adapter_version"]) == ("acme", "acme", 1)
    assert acme["answer"] == "acme@v1 says hello" and acme["api_key"] == "tester"
    assert exchanges[streamed_id]["answer"] == "base says hello"
    assert exchanges[streamed_id]["adapter"] is None
    docs = exchanges[indexed_id]
    assert docs["sources"] == ["refunds.md", "shipping.md"] and docs["index_version"] == "v7"
    assert docs["messages"] == [{"role": "user", "content": "Refund window?"}]
    events = [r for r in file_lines(data) if r["type"] == "feedback"]
    assert [(e["response_id"], e["rating"]) for e in events] == [
        (response_id, 1),
        (response_id, -1),
        (streamed_id, 1),
    ]
    assert all(e["api_key"] == "tester" for e in events)

    metrics = client.get("/metrics").text
    assert 'lorag_feedback_total{rating="1"} 2.0' in metrics
    assert 'lorag_feedback_total{rating="-1"} 1.0' in metrics


def test_bad_feedback_and_auth(api) -> None:
    client, data = api
    response_id = ask(client, "acme", "hello")
    unknown = rate(client, "chatcmpl-" + "0" * 32, rating=1)
    assert_error(unknown, 404, param="response_id", code="response_not_found")
    post = lambda body, **kw: client.post("/v1/feedback", headers=CHAT, json=body, **kw)
    assert_error(post({"rating": 1}), 400, param="response_id")
    assert_error(post({"response_id": ""}), 400, param="response_id")
    for rating in (3, -3, "1", 1.5, True):
        assert_error(post({"response_id": response_id, "rating": rating}), 400, param="rating")
    assert_error(post({"response_id": response_id}), 400, param="rating")  # nothing to record
    assert_error(post({"response_id": response_id, "comment": "meh"}), 400, param="rating")
    assert_error(post({"response_id": response_id, "correction": "  "}), 400, param="correction")
    assert_error(post({"response_id": response_id, "rating": 1, "typo": 1}), 400, param="typo")
    raw = client.post(
        "/v1/feedback",
        headers={**CHAT, "content-type": "application/json"},
        content=b'{"response_id": ',
    )
    assert "JSON" in assert_error(raw, 400)["message"]
    assert_error(client.post("/v1/feedback", json={"response_id": response_id, "rating": 1}), 401)
    wrong = {"Authorization": "Bearer not-a-real-key-123"}
    assert_error(rate(client, response_id, headers=wrong, rating=1), 401)
    assert rate(client, response_id, headers=ADMIN, rating=1).status_code == 201  # admin ⊃ chat
    assert_error(client.get("/admin/feedback/export", headers=CHAT), 403)
    assert_error(client.get("/admin/feedback/export"), 401)
    export = lambda query: client.get(f"/admin/feedback/export?{query}", headers=ADMIN)
    assert_error(export("since=yesterday"), 400, param="since")
    assert_error(export("min_rating=0"), 400, param="min_rating")
    assert_error(export("format=csv"), 400, param="format")
    # Only the admin's rating reached the store.
    events = [r for r in file_lines(data) if r["type"] == "feedback"]
    assert [(e["rating"], e["api_key"]) for e in events] == [(1, "operator")]


def test_feedback_reaches_any_replica(srv_model, srv_adapters_root, tmp_path) -> None:
    """Two replicas on one shared data folder, each writing its own file."""
    data = tmp_path / "shared"
    one, two = (
        running_app(
            srv_model,
            srv_adapters_root,
            data,
            tmp_path / name,
            feedback=FeedbackSettings(replica=name),
        )
        for name in ("one", "two")
    )
    with one as (first, _), two as (second, _):
        response_id = ask(first, "base", "hello")
        assert rate(second, response_id, rating=1).status_code == 201
        assert rate(first, response_id, rating=2).status_code == 200  # replaces the first
        exported = second.get("/admin/feedback/export?min_rating=2", headers=ADMIN)
    lines = [json.loads(line) for line in exported.text.splitlines()]
    assert [line["metadata"]["rating"] for line in lines] == [2]
    folder = feedback_folder(data)
    assert sorted(p.name for p in folder.glob("*.jsonl")) == ["one.jsonl", "two.jsonl"]
    assert '"type":"feedback"' in (folder / "two.jsonl").read_text()


def test_feedback_can_be_disabled(srv_model, srv_adapters_root, tmp_path) -> None:
    data = tmp_path / "data"
    off = FeedbackSettings(enabled=False)
    with running_app(srv_model, srv_adapters_root, data, feedback=off) as (client, _):
        response_id = ask(client, "base", "hello")
        assert_error(rate(client, response_id, rating=1), 404, code="feedback_disabled")
        assert_error(client.get("/admin/feedback/export", headers=ADMIN), 404)
    assert not feedback_folder(data).exists()


# Persistence and export -----------------------------------------------------------------------


class Rated:
    """The module's store: answers rated in one app, then more after a restart."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.ids: dict[str, str] = {}
        self.http_export = ""
        self.http_summary: dict = {}

    @property
    def folder(self) -> Path:
        return feedback_folder(self.data)


@pytest.fixture(scope="module")
def rated(srv_model, srv_adapters_root, tmp_path_factory) -> Rated:
    store = Rated(tmp_path_factory.mktemp("feedback") / "data")
    history = [
        {"role": "user", "content": "Do you ship abroad?"},
        {"role": "assistant", "content": "Yes, to the EU."},
        {"role": "user", "content": "How long does it take?"},
    ]
    with running_app(srv_model, srv_adapters_root, store.data) as (client, _):
        setup_domains(client)
        ids = store.ids
        for name, model, content in [
            ("good", "acme", "What is the refund window?"),
            ("great", "acme", "How long is the warranty?"),
            ("bad", "acme", "Is the blue one waterproof?"),
            ("fixed", "acme", "Which card is refunded?"),
            ("later", "acme", "Where are you based?"),
            ("support", "support", "How do I reset my password?"),
            ("history", "support", history),
            ("base", "base", "Say something."),
            ("unrated", "acme", "Never rated."),
        ]:
            ids[name] = ask(client, model, content)
        assert rate(client, ids["good"], rating=1).status_code == 201
        assert rate(client, ids["great"], rating=2).status_code == 201
        assert rate(client, ids["bad"], rating=-1, comment="wrong").status_code == 201
        rate(client, ids["fixed"], rating=1)
        fixed = rate(client, ids["fixed"], rating=-2, correction="The original card.")
        assert fixed.status_code == 200  # last wins
        assert rate(client, ids["support"], rating=1).status_code == 201
        assert rate(client, ids["history"], rating=1).status_code == 201
        assert rate(client, ids["base"], correction="Something.").status_code == 201
    # A restart: the exchanges answered before it can still be rated, and exported.
    with running_app(srv_model, srv_adapters_root, store.data) as (client, _):
        assert rate(client, ids["later"], rating=1).status_code == 201
        exported = client.get("/admin/feedback/export", headers=ADMIN)
        assert exported.status_code == 200, exported.text
        assert exported.headers["content-type"].startswith("application/x-ndjson")
        store.http_export = exported.text
        store.http_summary = json.loads(exported.headers[SUMMARY_HEADER])
    return store


def answers(records: list[dict]) -> dict[str, str]:
    """response id -> the exported answer."""
    found = {}
    for record in records:
        messages = record.get("messages")
        found[record["metadata"]["response_id"]] = (
            messages[-1]["content"] if messages else record["answer"]
        )
    return found


def test_export_keeps_positive_and_corrected_answers(rated: Rated, tmp_path: Path) -> None:
    records, summary = export_records(rated.folder, ExportOptions())
    ids = rated.ids
    assert answers(records) == {
        ids["good"]: "acme@v1 says hello",
        ids["great"]: "acme@v1 says hello",
        ids["fixed"]: "The original card.",  # the correction replaces the answer
        ids["later"]: "acme@v1 says hello",  # rated after the restart
        ids["support"]: "base says hello",
        ids["history"]: "base says hello",
        ids["base"]: "Something.",
    }  # `bad` (negative, no correction) and `unrated` are left out
    assert summary.records == 7
    assert summary.by_domain == {
        "-": {"correction": 1},
        "acme": {"positive": 3, "correction": 1},
        "support": {"positive": 2},
    }
    assert summary.excluded == {"negative_without_correction": 1}
    good = next(r for r in records if r["metadata"]["response_id"] == ids["good"])
    assert good["messages"] == [
        {"role": "system", "content": ACME_PROMPT},  # the domain's prompt, as served
        {"role": "user", "content": "What is the refund window?"},  # as sent: no context
        {"role": "assistant", "content": "acme@v1 says hello"},
    ]
    meta = good["metadata"]
    assert (meta["kind"], meta["rating"], meta["domain"]) == ("positive", 1, "acme")
    assert (meta["adapter"], meta["adapter_version"], meta["model"]) == ("acme", 1, "acme")
    history = next(r for r in records if r["metadata"]["response_id"] == ids["history"])
    assert [m["role"] for m in history["messages"]] == ["user", "assistant", "user", "assistant"]

    # Over HTTP the same export, and the same summary.
    assert rated.http_export == "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    assert rated.http_summary == summary.model_dump()

    # The file loads with training's loader, conversation for conversation.
    path = tmp_path / "train.jsonl"
    path.write_text(rated.http_export)
    examples, info, errors = load_data_file(path)
    assert errors == [] and info.records == 7
    assert [e.messages for e in examples] == [r["messages"] for r in records]


def test_export_filters(rated: Rated) -> None:
    ids = rated.ids

    def exported(**options) -> set[str]:
        return set(answers(export_records(rated.folder, ExportOptions(**options))[0]))

    assert exported(domain="acme") == {ids["good"], ids["great"], ids["fixed"], ids["later"]}
    assert exported(domain="support") == {ids["support"], ids["history"]}
    assert exported(domain="nope") == set()
    assert exported(adapter="acme") == exported(domain="acme")
    # min_rating 2: only the great answer, plus corrections (whatever their rating).
    assert exported(min_rating=2) == {ids["great"], ids["fixed"], ids["base"]}
    _, summary = export_records(rated.folder, ExportOptions(min_rating=2))
    assert summary.excluded == {"below_min_rating": 4, "negative_without_correction": 1}
    assert exported(since=parse_since("1h")) == exported()
    assert exported(since=datetime.now(UTC) + timedelta(minutes=5)) == set()
    assert parse_since("2026-05-01") == datetime(2026, 5, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="ISO date"):
        parse_since("last tuesday")


def test_qa_export_loads_as_retrieval_aware_pairs(rated: Rated, tmp_path: Path) -> None:
    records, summary = export_records(rated.folder, ExportOptions(format="qa", domain="support"))
    assert summary.excluded == {"multi_turn_for_qa": 1}  # the conversation with history
    assert records == [
        {
            "question": "How do I reset my password?",
            "answer": "base says hello",
            "metadata": records[0]["metadata"],
        }
    ]
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps(records[0]) + "\n")
    pairs, info, errors = load_qa_file(path)
    assert errors == [] and info.records == 1
    assert (pairs[0][1].question, pairs[0][1].answer) == (records[0]["question"], "base says hello")


def test_cli_export_from_the_data_dir(rated: Rated, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "lorag.yaml"
    config.write_text(yaml.safe_dump({"serving": {"data_dir": str(rated.data)}}))
    out = tmp_path / "out" / "acme.jsonl"
    export = ["--config", str(config), "feedback", "export"]
    result = CliRunner().invoke(lorag, [*export, "-o", str(out), "--domain", "acme"])
    assert result.exit_code == 0, result.output
    assert "acme" in result.stdout and "negative without correction: 1" in result.stdout
    assert f"lorag train --data {out}" in result.stdout
    examples, _, _ = load_data_file(out)
    assert len(examples) == 4
    result = CliRunner().invoke(
        lorag,
        ["feedback", "export", "-o", str(out), "--data-dir", str(rated.data), "--json"]
        + ["--min-rating", "2", "--since", "2d"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["records"] == 3 and summary["output"] == str(out)
    assert len(load_data_file(out)[0]) == 3
    # Nothing matches: an error, and no file.
    empty = tmp_path / "empty.jsonl"
    result = CliRunner().invoke(lorag, [*export, "-o", str(empty), "--domain", "nope"])
    assert result.exit_code == 1 and isinstance(
        result.exception, feedback_commands.NothingToExportError
    )
    assert not empty.exists()
    result = CliRunner().invoke(lorag, [*export, "-o", str(empty), "--since", "x"])
    assert result.exit_code == 2 and "--since" in result.output


# The store ------------------------------------------------------------------------------------


def exchange(response_id: str, when: datetime | None = None, answer: str = "") -> Exchange:
    return Exchange(
        response_id=response_id,
        time=when or datetime.now(UTC),
        model="acme",
        domain="acme",
        messages=[{"role": "user", "content": f"question {response_id}"}],
        answer=answer or f"answer {response_id}",
    )


# Another process appending to the same file as two of the test's stores.
WRITER = textwrap.dedent(
    """
    import sys
    from serving.feedback.records import Exchange, FeedbackEvent
    from serving.feedback.store import FeedbackStore
    from serving.settings import FeedbackSettings

    store = FeedbackStore(sys.argv[1], FeedbackSettings(replica="shared"))
    print("ready", flush=True)
    for n in range(40):
        store.record_exchange(Exchange(response_id=f"proc-{n}", model="acme", answer="x" * 70000,
                                       messages=[{"role": "user", "content": "q"}]))
        store.add_feedback(FeedbackEvent(response_id=f"seed-{n % 10}", rating=1,
                                         correction="p" * 70000))
    """
)
REPO = Path(__file__).resolve().parents[2]


def test_concurrent_writers_never_corrupt_the_store(tmp_path: Path) -> None:
    """Threads on two stores sharing one file, a third replica's file, and another process,
    all at once, with lines far larger than a pipe buffer: every line stays whole."""
    folder = tmp_path / "feedback"
    shared_a = FeedbackStore(folder, FeedbackSettings(replica="shared"))
    shared_b = FeedbackStore(folder, FeedbackSettings(replica="shared"))
    other = FeedbackStore(folder, FeedbackSettings(replica="other"))
    for n in range(10):
        shared_a.record_exchange(exchange(f"seed-{n}"))
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(folder)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline() == "ready\n"

    def work(worker: int) -> None:
        store = (shared_a, shared_b, other)[worker % 3]
        for n in range(30):
            store.record_exchange(exchange(f"t{worker}-{n}", answer="a" * (n * 5000 + 1)))
            # Feedback on an id another store (even another replica's file) recorded.
            store.add_feedback(
                FeedbackEvent(response_id=f"seed-{n % 10}", rating=1, correction="c" * 70000)
            )

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(work, range(6)))
    assert process.wait(timeout=120) == 0
    stored = read_folder(folder)
    assert stored.malformed_lines == 0 and stored.files == 2
    assert len(stored.exchanges) == 10 + 6 * 30 + 40
    lines = sum(len(p.read_bytes().splitlines()) for p in folder.glob("*.jsonl"))
    assert lines == 10 + 6 * 30 * 2 + 40 * 2  # no line lost, none torn
    # Last wins: a later event replaces every earlier one for that response.
    shared_b.add_feedback(FeedbackEvent(response_id="seed-3", rating=2))
    exported = answers(export_records(folder, ExportOptions(min_rating=2))[0])
    assert exported["seed-3"] == "answer seed-3"  # no correction any more
    assert {len(exported[f"seed-{n}"]) for n in range(10) if n != 3} == {70000}


def test_retention_drops_old_and_unrated_first(tmp_path: Path) -> None:
    folder = tmp_path / "feedback"
    now = datetime.now(UTC)
    settings = FeedbackSettings(replica="one", max_exchanges=10, retention_days=1)
    store = FeedbackStore(folder, settings)
    for n in range(3):
        store.record_exchange(exchange(f"old-{n}", now - timedelta(days=2)))
    store.add_feedback(FeedbackEvent(response_id="old-0", rating=1))
    elsewhere = FeedbackStore(folder, FeedbackSettings(replica="two"))
    elsewhere.record_exchange(exchange("theirs"))
    store.add_feedback(FeedbackEvent(response_id="theirs", rating=1))  # in one's file
    for n in range(25):  # past max_exchanges + slack (20): a rewrite while recording
        store.record_exchange(exchange(f"new-{n:02d}", now + timedelta(seconds=n)))
        if n < 3:
            store.add_feedback(FeedbackEvent(response_id=f"new-{n:02d}", rating=1))
    store.compact()
    kept = {r.response_id for r in read_folder(folder).exchanges.values()} - {"theirs"}
    # Age first (rated or not), then the oldest unrated; the rated new ones stay.
    assert kept == {"new-00", "new-01", "new-02"} | {f"new-{n}" for n in range(18, 25)}
    assert not store.has_exchange("old-1")
    with pytest.raises(UnknownResponseError):
        store.add_feedback(FeedbackEvent(response_id="old-0", rating=1))
    stored = read_folder(folder)
    assert set(stored.feedback) == {"new-00", "new-01", "new-02", "theirs"}
    assert stored.malformed_lines == 0
    # A fresh store (a restart) applies the same retention and knows the same ids.
    again = FeedbackStore(folder, settings)
    assert again.has_exchange("new-24") and again.has_exchange("theirs")


def test_a_torn_line_is_sealed_off(tmp_path: Path) -> None:
    folder = tmp_path / "feedback"
    store = FeedbackStore(folder, FeedbackSettings(replica="one"))
    store.record_exchange(exchange("before"))
    with store.path.open("ab") as out:
        out.write(b'{"type": "exchange", "response_id": "torn", "ti')  # a crash mid-write
    assert read_folder(folder).exchanges.keys() == {"before"}  # readers skip it
    store.record_exchange(exchange("after"))
    store.add_feedback(FeedbackEvent(response_id="after", rating=1))
    stored = read_folder(folder)
    assert stored.exchanges.keys() == {"before", "after"} and stored.malformed_lines == 1
    assert store.compact() == (3, 1)
    assert read_folder(folder).malformed_lines == 0
    assert FeedbackStore(folder, FeedbackSettings(replica="one")).has_exchange("after")


# Real HTTP, real engine ------------------------------------------------------------------------


def test_over_http_with_the_openai_client_and_cli(
    srv_loop: LoopThread, srv_model: Path, srv_adapters_root: Path, tmp_path: Path
) -> None:
    """uvicorn + the transformers engine + the `openai` client; `lorag feedback export
    --server` pulls the training file from the running server."""
    settings = serving_settings(
        srv_adapters_root,
        tmp_path / "data",
        engine=EngineSettings(kind="transformers", max_adapters=2, max_lora_rank=8),
    )
    app = create_app(settings, retrieval_settings(tmp_path / "qdrant"), srv_model)
    server = RunningServer(srv_loop, app)
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=CHAT_KEY, max_retries=0)
        question = [{"role": "user", "content": "Tell me about refunds."}]
        reply = client.chat.completions.create(model="base", messages=question, max_tokens=6)
        stream = client.chat.completions.create(
            model="base", messages=question, max_tokens=4, stream=True
        )
        (streamed_id,) = {chunk.id for chunk in stream}  # read to the end of the stream
        correction = {"response_id": streamed_id, "rating": -1, "correction": "Within 14 days."}
        with httpx.Client(base_url=server.url, headers=CHAT, timeout=60) as http:
            rated = http.post("/v1/feedback", json={"response_id": reply.id, "rating": 1})
            assert rated.status_code == 201, rated.text
            assert http.post("/v1/feedback", json=correction).status_code == 201
        out = tmp_path / "train.jsonl"
        result = CliRunner().invoke(
            lorag,
            ["feedback", "export", "--server", server.url, "--api-key", ADMIN_KEY, "-o", str(out)],
        )
        assert result.exit_code == 0, result.output
        denied = CliRunner().invoke(
            lorag,
            ["feedback", "export", "--server", server.url, "--api-key", CHAT_KEY, "-o", str(out)],
        )
        assert denied.exit_code == 1 and "403" in str(denied.exception)
    finally:
        server.stop()
    examples, _, _ = load_data_file(out)
    assert [e.messages for e in examples] == [
        [*question, {"role": "assistant", "content": reply.choices[0].message.content.strip()}],
        [*question, {"role": "assistant", "content": "Within 14 days."}],
    ]
