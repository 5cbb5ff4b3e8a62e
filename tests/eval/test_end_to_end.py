"""`lorag eval answers` and `lorag eval load` against a real server over real HTTP: a tiny
model with random adapters, real Qdrant local mode, and each real engine: vLLM on CPU
(production; marked `vllm`) and the transformers + PEFT reference engine (fast)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI
from typer.testing import CliRunner

from lorag.cli import app
from tests.eval.reportcheck import check_written
from tests.support.adapters import make_random_adapter

CHAT_KEY = "eval-chat-key-0123"
ADMIN_KEY = "eval-admin-key-0123"

DOCS = {
    "refunds.md": "# Refunds\n\nRefunds are issued within 14 days of purchase when the product "
    "is returned unused.\n",
    "shipping.md": "# Shipping\n\nStandard shipping takes five business days.\n",
    "warranty/policy.md": "# Warranty\n\nEvery blue product carries a two year warranty.\n",
}

QUESTIONS = [
    {"question": "Within how many days are refunds issued?", "answer": "14 days",
     "gold_doc": "refunds.md"},
    {"question": "How long does standard shipping take?", "answer": "five business days",
     "gold_doc": "shipping.md"},
    {"question": "How long is the warranty on blue products?", "answer": "two year",
     "aliases": ["2 years"], "gold_doc": "warranty/policy.md"},
]


SHOTS = [  # training questions: solved examples for the few-shot baseline
    {"question": "What colour carries the warranty?", "answer": "blue"},
    {"question": "When are refunds issued?", "answer": "when the product is returned unused"},
]


@pytest.fixture(
    scope="module", params=["transformers", pytest.param("vllm", marks=pytest.mark.vllm)]
)
def server(
    request: pytest.FixtureRequest, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict]:
    from retrieval import Retriever
    from retrieval.settings import QdrantSettings, RetrievalSettings
    from serving.app import create_app
    from serving.engine.settings import EngineSettings
    from serving.settings import ApiKey, DomainSpec, ServingSettings
    from tests.support.live_server import RunningServer

    root = tmp_path_factory.mktemp(f"eval-e2e-{request.param}")
    adapters = root / "adapters"
    make_random_adapter(tiny_model, adapters / "shop" / "v1", seed=31, name="shop")
    make_random_adapter(tiny_model, adapters / "shop" / "v2", seed=32, name="shop")
    docs = root / "docs"
    for name, text in DOCS.items():
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        (docs / name).write_text(text)
    retrieval = RetrievalSettings(qdrant=QdrantSettings(path=root / "qdrant"), k=3)
    with Retriever(retrieval) as retriever:
        retriever.index("shop", docs)
    settings = ServingSettings(
        api_keys=[
            ApiKey(key=CHAT_KEY, scopes=["chat"], name="eval"),
            ApiKey(key=ADMIN_KEY, scopes=["admin"], name="eval-admin"),
        ],
        adapters_root=adapters,
        data_dir=root / "serving",
        engine=EngineSettings(kind=request.param, max_adapters=3, max_lora_rank=8,
                              max_model_len=1024, kv_cache_gib=0.25),
        domains={"shop": DomainSpec(adapter="shop", index=True), "plain": DomainSpec()},
        adapters={"shop": "shop/v1"},
    )
    served = create_app(settings, retrieval, tiny_model)
    running = RunningServer(None, served, ready_path="/ready", start_timeout_s=600)
    evalset = root / "set.jsonl"
    evalset.write_text("\n".join(json.dumps(q) for q in QUESTIONS) + "\n")
    shots = root / "train.jsonl"
    shots.write_text("\n".join(json.dumps(q) for q in [QUESTIONS[0], *SHOTS]) + "\n")
    try:
        yield {"url": running.url, "evalset": evalset, "shots": shots}
    finally:
        running.stop()


def invoke(args: list[str]) -> dict:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_answers_eval_end_to_end(server: dict, tmp_path: Path) -> None:
    out = invoke([
        "eval", "answers", "shop", str(server["evalset"]), "--server", server["url"],
        "--api-key", CHAT_KEY, "--k", "2", "--max-tokens", "12", "--concurrency", "3",
        # The judge: any OpenAI-compatible endpoint; here the same server and domain.
        "--judge", "--judge-url", f"{server['url']}/v1", "--judge-model", "shop",
        "--judge-api-key", CHAT_KEY, "--out", str(tmp_path), "--json",
    ])
    written_folder = Path(out["files"]["folder"])
    summary = out["summary"]["configs"]
    assert list(summary) == ["base", "base+rag", "adapter", "adapter+rag"]
    for name, s in summary.items():
        assert (s["answered"], s["errors"]) == (len(QUESTIONS), 0), (name, s)
        for metric in ("exact_match", "token_f1", "contained"):
            assert 0.0 <= s[metric] <= 1.0
    assert summary["base"]["adapter_versions"] == []
    assert summary["adapter"]["adapter_versions"] == [1]
    # Without retrieval there is no context to be grounded in or to cite.
    assert summary["base"]["groundedness"] is None
    assert summary["adapter"]["citation_accuracy"] is None
    assert summary["base+rag"]["citation_accuracy"] is not None

    payload = json.loads((written_folder / "results.json").read_text())
    rows = payload["results"]
    assert len(rows) == 4 * len(QUESTIONS)
    by_config: dict[str, list[dict]] = {}
    for row in rows:
        by_config.setdefault(row["config"], []).append(row)
        assert row["error"] is None and "judge_reply" in row and "judge_error" not in row
        if row["config"].endswith("+rag"):
            assert len(row["sources"]) == 2  # --k 2 reached the server
            assert {s["doc_id"] for s in row["sources"]} <= set(DOCS)
            assert row["served_by"]["index_version"]
            assert row["citation_accuracy"] in (0.0, 1.0)
        else:
            assert row["sources"] == [] and row["citation_accuracy"] is None
        assert row["served_by"]["adapter"] == ("shop" if "adapter" in row["config"] else None)
    # The random adapter changes what the model says.
    base_outputs = [r["output"] for r in sorted(by_config["base"], key=lambda r: r["id"])]
    adapter_outputs = [r["output"] for r in sorted(by_config["adapter"], key=lambda r: r["id"])]
    assert base_outputs != adapter_outputs
    # The eval asked exactly what a direct request asks: the same answer and sources.
    first = next(r for r in by_config["adapter+rag"] if r["id"] == "line-1")
    direct = OpenAI(base_url=f"{server['url']}/v1", api_key=CHAT_KEY).chat.completions.create(
        model="shop",
        messages=[{"role": "user", "content": QUESTIONS[0]["question"]}],
        temperature=0.0,
        max_tokens=12,
        extra_body={"lorag": {"adapter": True, "retrieval": True, "k": 2}},
    )
    assert direct.choices[0].message.content == first["output"]
    assert [s["doc_id"] for s in direct.model_extra["sources"]] == [
        s["doc_id"] for s in first["sources"]
    ]

    from eval.report import WrittenReport

    written = WrittenReport(
        folder=written_folder,
        markdown=Path(out["files"]["report"]),
        json=Path(out["files"]["results"]),
        plots=[Path(p) for p in out["files"]["plots"]],
    )
    check_written(written, {"configs.png", "latency.png"}, ["config"])


def test_few_shot_baseline_end_to_end(server: dict, tmp_path: Path) -> None:
    out = invoke([
        "eval", "answers", "shop", str(server["evalset"]), "--server", server["url"],
        "--api-key", CHAT_KEY, "--configs", "base+rag,base+rag+2shot,adapter+rag",
        "--shots-from", str(server["shots"]), "--max-tokens", "6", "--out", str(tmp_path),
        "--json",
    ])
    summary = out["summary"]
    assert summary["configs"]["base+rag+2shot"]["answered"] == len(QUESTIONS)
    assert summary["strongest_base"] in ("base+rag", "base+rag+2shot")
    assert set(summary["margins"]) == {"adapter+rag"}
    rows = json.loads(Path(out["files"]["results"]).read_text())["results"]
    few = [r for r in rows if r["config"] == "base+rag+2shot"]
    for row in few:
        prompt = row["prompt"]
        # The shots are the training questions not in the eval set (QUESTIONS[0] is skipped),
        # each with its own retrieved context, then this question and `Answer:`.
        assert "Question: " + SHOTS[0]["question"] + "\nAnswer: blue" in prompt
        assert SHOTS[1]["answer"] in prompt and prompt.count("Context:\n[1] ") == 3
        assert prompt.endswith("Question: " + row["question"] + "\nAnswer:")
        # An eval question is never a solved example.
        assert prompt.count("Question: " + QUESTIONS[0]["question"]) == (row["id"] == "line-1")
        assert row["served_by"]["adapter"] is None and len(row["sources"]) == 3
        assert "\n" not in row["output"]
    # The exact prompt is in the report, and the strongest base configuration is named.
    report = Path(out["files"]["report"]).read_text()
    assert "The prompt base+rag+2shot sent for line-1" in report
    assert "Strongest configuration without an adapter" in report

    runner = CliRunner()
    same = runner.invoke(app, [
        "eval", "answers", "shop", str(server["evalset"]), "--server", server["url"],
        "--api-key", CHAT_KEY, "--configs", "base+rag+1shot", "--shots-from",
        str(server["evalset"]), "--out", str(tmp_path / "never"),
    ])
    assert isinstance(same.exception, ValueError) and "eval questions themselves" in str(same.exception)
    missing = runner.invoke(app, [
        "eval", "answers", "shop", str(server["evalset"]), "--server", server["url"],
        "--api-key", CHAT_KEY, "--configs", "base+rag+1shot", "--out", str(tmp_path / "never"),
    ])
    assert isinstance(missing.exception, ValueError) and "--shots-from" in str(missing.exception)


def test_load_eval_end_to_end_with_adapter_replacements(server: dict, tmp_path: Path) -> None:
    out = invoke([
        "eval", "load", "--server", server["url"], "--model", "shop", "--api-key", CHAT_KEY,
        "--concurrency", "3", "--duration", "3", "--max-tokens", "8",
        "--replace-adapter", "shop=shop/v2", "--replace-adapter", "shop=shop/v1",
        "--replace-every", "0.5", "--admin-key", ADMIN_KEY, "--out", str(tmp_path), "--json",
    ])
    s = out["summary"]
    assert s["requests"] >= 3 and s["errors"] == 0, s["error_kinds"]
    assert s["output_tokens"] > 0 and s["output_tokens_per_s"] > 0
    assert s["latency_p50_s"] <= s["latency_p95_s"] <= s["latency_p99_s"]
    assert s["ttft_p50_s"] is not None and s["ttft_p50_s"] <= s["latency_p99_s"]
    assert s["replacements"] >= 1 and s["replacement_errors"] == 0
    # Every request was served by the first version or one a replacement created.
    created = {"1"} | {str(r["response"]["version"]) for r in s["replacement_log"]}
    assert set(s["adapter_versions"]) <= created
    assert sum(s["adapter_versions"].values()) == s["ok"]
    payload = json.loads(Path(out["files"]["results"]).read_text())
    assert len(payload["results"]) == s["requests"]
    assert all(r["ttft_s"] is not None for r in payload["results"])
    assert all(r["sources"] == 3 for r in payload["results"])  # the domain's k, retrieval on


def test_load_eval_request_bound_and_switches(server: dict, tmp_path: Path) -> None:
    out = invoke([
        "eval", "load", "--server", server["url"], "--model", "shop", "--api-key", CHAT_KEY,
        "--concurrency", "2", "--requests", "5", "--max-tokens", "4", "--no-rag", "--no-adapter",
        "--out", str(tmp_path), "--json",
    ])
    s = out["summary"]
    assert (s["requests"], s["ok"], s["replacements"]) == (5, 5, 0)
    assert s["adapter_versions"] == {}  # --no-adapter: the base model served every request
    assert 0 < s["output_tokens"] <= 5 * 4
    results = json.loads(Path(out["files"]["results"]).read_text())["results"]
    assert [r["sources"] for r in results] == [0] * 5  # --no-rag: nothing retrieved


def test_requests_the_server_cannot_serve_fail_early(server: dict) -> None:
    runner = CliRunner()
    base = ["--server", server["url"], "--out", str(server["evalset"].parent / "never")]
    plain = runner.invoke(app, ["eval", "answers", "plain", str(server["evalset"]),
                                      "--configs", "base,adapter+rag", "--api-key", CHAT_KEY,
                                      *base])
    assert isinstance(plain.exception, ValueError)
    assert "has no adapter" in str(plain.exception) and "has no index" in str(plain.exception)
    wrong_key = runner.invoke(app, ["eval", "answers", "shop", str(server["evalset"]),
                                          "--api-key", "not-the-key-123", *base])
    assert isinstance(wrong_key.exception, PermissionError)
    unknown = runner.invoke(app, ["eval", "load", "--model", "nope", "--requests", "1",
                                        "--api-key", CHAT_KEY, *base])
    assert isinstance(unknown.exception, ValueError)
    assert "does not serve 'nope'" in str(unknown.exception) and "shop" in str(unknown.exception)
    assert not (server["evalset"].parent / "never").exists()  # nothing written for a failed run


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    evalset = tmp_path / "set.jsonl"
    evalset.write_text(json.dumps(QUESTIONS[0]) + "\n")
    result = CliRunner().invoke(
        app, ["eval", "answers", "shop", str(evalset), "--server", url, "--out",
                    str(tmp_path / "out")]
    )
    assert isinstance(result.exception, ConnectionError)
    assert url in str(result.exception) and "lorag serve" in str(result.exception)


def test_one_swap_under_load(server: dict) -> None:
    """The demo's stage 6: requests keep running across one replacement; those that start
    after it are served by the new version. A replacement the server refuses raises."""
    from eval.client import make_client
    from eval.load import Replacement, swap_under_load

    async def swap(path: str) -> object:
        client = make_client(server["url"], CHAT_KEY, 120)
        try:
            return await swap_under_load(
                client, server["url"], Replacement("shop", path), ["What about refunds?"],
                concurrency=2, requests_after_swap=2, max_requests=12, max_tokens=4,
                admin_key=ADMIN_KEY, timeout_s=120,
            )  # fmt: skip
        finally:
            await client.close()

    done = asyncio.run(swap("shop/v2"))
    assert done.failures == [] and done.swap_status == 200
    assert done.new_version == done.replaced_version + 1
    assert done.in_flight_at_swap >= 1 and sum(done.versions.values()) == done.requests
    after = done.after_swap_versions
    assert list(after) == [done.new_version] and after[done.new_version] >= 2
    with pytest.raises(RuntimeError, match="replacing adapter 'shop' failed"):
        asyncio.run(swap("no/such/adapter"))
