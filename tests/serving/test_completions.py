"""`/v1/completions` and the completion prompt layout, on a scripted engine.

The real vLLM engine serves both in tests/serving/test_server.py (completion layout) and in
the eval tests (the few-shot baseline over `/v1/completions`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from transformers import AutoTokenizer

from retrieval.prompt import COMPLETION_STOP, build_messages, completion_ids, prompt_format
from tests.serving.conftest import ADMIN, CHAT, _edit_manifest
from tests.serving.test_api import assert_error, chat_body, running_app


def test_text_completion_passes_the_prompt_untouched(srv_model: Path, srv_adapters_root, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(srv_model)
    with running_app(srv_model, srv_adapters_root, tmp_path / "data") as (client, engine):
        loaded = client.post("/admin/adapters", headers=ADMIN, json={"name": "acme", "path": "acme/v1"})
        assert loaded.status_code == 201, loaded.text
        prompt = "Question: what is red?\nAnswer:"
        body = {"model": "base", "prompt": prompt, "max_tokens": 5, "stop": ["\n"], "temperature": 0}
        reply = client.post("/v1/completions", headers=CHAT, json=body)
        assert reply.status_code == 200, reply.text
        data = reply.json()
        assert data["object"] == "text_completion" and data["id"].startswith("cmpl-")
        assert data["choices"][0]["text"] == "base says hello"
        assert data["usage"]["prompt_tokens"] == len(tokenizer(prompt)["input_ids"])
        assert engine.prompts[-1] == tokenizer(prompt)["input_ids"]  # no template around it
        assert engine.options[-1].stop == ("\n",) and engine.options[-1].max_tokens == 5

        adapted = client.post("/v1/completions", headers=CHAT, json={**body, "model": "acme"}).json()
        assert adapted["choices"][0]["text"] == "acme@v1 says hello"
        assert adapted["lorag"]["adapter_version"] == 1

        assert_error(client.post("/v1/completions", headers=CHAT, json={**body, "stream": True}), 400, "stream")
        two = {**body, "prompt": ["a", "b"]}
        assert_error(client.post("/v1/completions", headers=CHAT, json=two), 400, "prompt")
        assert_error(client.post("/v1/completions", headers=CHAT, json={**body, "prompt": ""}), 400, "prompt")
        assert_error(client.post("/v1/completions", headers=CHAT, json={**body, "model": "nope"}), 404, "model")
        huge = {**body, "max_tokens": 10**6}
        assert_error(client.post("/v1/completions", headers=CHAT, json=huge), 400, "max_tokens")
        assert_error(client.post("/v1/completions", json=body), 401)


def test_completion_layout_server_renders_plain_text_and_refuses_chat_adapters(
    srv_model: Path, srv_adapters_root: Path, tmp_path: Path
):
    root = tmp_path / "adapters"
    shutil.copytree(srv_adapters_root / "acme" / "v1", root / "chat-trained")
    shutil.copytree(srv_adapters_root / "acme" / "v1", root / "completion-trained")
    _edit_manifest(root / "completion-trained", prompt_format=prompt_format("completion"))
    tokenizer = AutoTokenizer.from_pretrained(srv_model)
    with running_app(srv_model, root, tmp_path / "data", prompt_layout="completion") as (client, engine):
        refused = client.post("/admin/adapters", headers=ADMIN, json={"name": "a", "path": "chat-trained"})
        error = assert_error(refused, 400, "path", "incompatible_adapter")
        assert "lorag-rag-v1" in error["message"] and "lorag-completion-v1" in error["message"]
        loaded = client.post("/admin/adapters", headers=ADMIN, json={"name": "a", "path": "completion-trained"})
        assert loaded.status_code == 201, loaded.text

        reply = client.post("/v1/chat/completions", headers=CHAT, json=chat_body("a", "what is red?"))
        assert reply.status_code == 200, reply.text
        expected, _ = completion_ids(tokenizer, build_messages([{"role": "user", "content": "what is red?"}], []))
        assert engine.prompts[-1] == expected
        assert tokenizer.decode(engine.prompts[-1], skip_special_tokens=True) == "what is red?\nAnswer:"
        assert COMPLETION_STOP in engine.options[-1].stop


def test_a_raft_training_sample_is_the_served_prompt_token_for_token(
    srv_model: Path, srv_adapters_root: Path, srv_documents: dict[str, bytes], tmp_path: Path
):
    """Training (RAFT samples, the trainer's tokenization) and serving (retrieval, rendering)
    meet in the completion layout: the sample's tokens before the answer are the prompt the
    engine gets for the same question."""
    from tests.serving.conftest import wait_for_job
    from training.batches import IGNORE_INDEX, tokenize_conversation
    from training.raft import QAPair, build_raft_examples
    from training.settings import RaftSettings

    tokenizer = AutoTokenizer.from_pretrained(srv_model)
    question = "How long is the warranty on blue products?"
    with running_app(srv_model, srv_adapters_root, tmp_path / "data", prompt_layout="completion") as (
        client,
        engine,
    ):
        spec = {"name": "docs", "index": True, "k": 2, "system_prompt": "You answer from docs."}
        assert client.post("/admin/domains", headers=ADMIN, json=spec).status_code == 201
        for path, data in srv_documents.items():
            saved = client.post(
                "/admin/domains/docs/documents", headers=ADMIN,
                files={"file": ("x.md", data, "text/markdown")}, data={"path": path},
            )
            assert saved.status_code == 201, saved.text
        job = client.post("/admin/domains/docs/reindex", headers=ADMIN).json()
        assert wait_for_job(client, job["id"])["status"] == "succeeded"

        reply = client.post("/v1/chat/completions", headers=CHAT, json=chat_body("docs", question))
        assert reply.status_code == 200, reply.text
        served = engine.prompts[-1]

        retriever = client.app.state.ctx.search.retriever
        pair = QAPair(question=question, answer="two years")
        raft = RaftSettings(distractor_only_fraction=0.0, system_prompt=spec["system_prompt"])
        (example,), _ = build_raft_examples([("qa.jsonl:1", pair)], retriever, "docs", raft, k=2)
    sample = tokenize_conversation(tokenizer, example.messages, "completion")
    first_label = next(i for i, label in enumerate(sample.labels) if label != IGNORE_INDEX)
    assert sample.input_ids[:first_label] == served
    assert tokenizer.decode(sample.input_ids[first_label:]).startswith(" two years [")
    assert [s["index"] for s in reply.json()["sources"]] == [1, 2]
