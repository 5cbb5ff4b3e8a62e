"""`lorag demo` end to end on the tiny model: real Qdrant (local mode), real embeddings, real
training, a real `lorag serve` subprocess on the vLLM engine, real HTTP with the `openai`
client, the real eval, with tiny budgets; and the demo file's checks without any of them."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from contracts.manifest import AdapterManifest, fingerprint_model
from lorag.demo.plan import prepare
from lorag.demo.run import STAGES, run_demo
from lorag.demo.settings import DemoError
from retrieval.prompt import prompt_format
from tests.support.tiny_models import build_tiny_model

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DOMAINS = {"acme-router": 3, "northwind-policies": 3}  # documents kept per domain


def _small_domain(source: Path, target: Path, documents: int) -> Path:
    """A copy of an example domain with its first few documents and their questions."""
    docs = sorted(p for p in (source / "docs").rglob("*") if p.is_file())[:documents]
    for doc in docs:
        copy = target / "docs" / doc.relative_to(source / "docs")
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(doc, copy)
    kept = {str(doc.relative_to(source / "docs")) for doc in docs}
    (target / "qa").mkdir(parents=True)
    for split in ("train", "heldout"):
        lines = (source / "qa" / f"{split}.jsonl").read_text().splitlines()
        mine = [line for line in lines if line.strip() and json.loads(line)["gold_doc"] in kept]
        (target / "qa" / f"{split}.jsonl").write_text("\n".join(mine) + "\n")
    shutil.copy(source / "domain.yaml", target / "domain.yaml")
    return target


def _demo_file(tmp: Path, model: Path, domains: list[Path]) -> Path:
    spec = {
        "demo": {
            "base_model": str(model),
            "model_cache_dir": str(tmp / "models"),
            "data_dir": str(tmp / "demo-data"),
            "domains": [str(d) for d in domains],
            "server_start_timeout_s": 300,
            "ask": {"questions": 1, "max_tokens": 8},
            "replace": {"concurrency": 2, "requests_after_swap": 2, "max_tokens": 8},
            "eval": {
                "questions": 2,
                "max_tokens": 8,
                "concurrency": 4,
                "configs": ["base+rag", "base+rag+1shot", "adapter+rag"],
            },
        },
        # The layout for pretrained bases, trained and served end to end on the real engine.
        "model": {"prompt_layout": "completion"},
        "retrieval": {"chunking": {"max_tokens": 64, "overlap_tokens": 8}, "k": 2},
        "training": {
            "max_steps": 2,
            "batch_size": 2,
            "warmup_steps": 0,
            "learning_rate": 1e-3,
            "validation_fraction": 0.0,
            "lora": {"r": 8, "alpha": 16},
        },
        "serving": {
            "engine": {
                "max_adapters": 3,
                "max_lora_rank": 8,
                "max_model_len": 2048,
                "kv_cache_gib": 0.25,
                "max_num_seqs": 8,
            }
        },
    }
    path = tmp / "demo.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def demo_inputs(tmp_path_factory) -> tuple[Path, Path, list[Path]]:
    tmp = tmp_path_factory.mktemp("demo")
    domains = [_small_domain(EXAMPLES / n, tmp / "domains" / n, c) for n, c in DOMAINS.items()]
    texts = [p.read_text() for d in domains for p in (d / "docs").rglob("*") if p.is_file()]
    model = build_tiny_model(tmp / "tiny-llama", arch="llama", extra_text=texts)
    return tmp, model, domains


@pytest.mark.vllm
def test_demo_end_to_end_on_the_tiny_model(demo_inputs) -> None:
    tmp, model, domains = demo_inputs
    demo_file = _demo_file(tmp, model, domains)
    result = run_demo(demo_file, console=Console(width=120, force_terminal=False))
    plan = result.plan
    names = [d.name for d in plan.domains]
    assert names == list(DOMAINS)

    # Every stage ran, in order, the server stage last.
    assert [s.title for s in result.stages] == list(STAGES)
    assert result.model_dir == model

    # 2. An index per domain, of the documents given.
    for name in names:
        report = result.indexes[name]
        assert report.documents_total == DOMAINS[name]
        assert report.chunks_total >= DOMAINS[name]

    # 3. One adapter per domain with its manifest, trained on RAFT samples of its questions.
    fingerprint = fingerprint_model(model)
    for domain in plan.domains:
        folder = result.adapters[domain.name]
        assert folder == plan.config.training.output_root / domain.name / "v1"
        assert (folder / "adapter_config.json").is_file()
        assert (folder / "adapter_model.safetensors").is_file()
        manifest = AdapterManifest.load(folder)
        assert (manifest.name, manifest.domain) == (domain.name, domain.name)
        assert manifest.base_fingerprint == fingerprint
        assert manifest.prompt_format == prompt_format("completion")
        assert manifest.metrics["steps"] == 2
        questions = len(domain.train_qa.read_text().splitlines())
        samples = [json.loads(line) for line in (folder / "raft-samples.jsonl").open()]
        assert len(samples) == questions
        first = samples[0]["messages"]
        assert first[0] == {"role": "system", "content": domain.system_prompt}
        assert "\n\nContext:\n[1] " in first[1]["content"]
        assert first[-1]["role"] == "assistant"

    # 5. Answers over HTTP, with their sources from the domain's own documents.
    assert [a.domain for a in result.answers] == names
    for answer in result.answers:
        docs = {str(p.relative_to(d.docs)) for d in plan.domains if d.name == answer.domain
                for p in d.docs.rglob("*") if p.is_file()}  # fmt: skip
        assert [s["index"] for s in answer.sources] == [1, 2]
        assert {s["doc_id"] for s in answer.sources} <= docs
        assert answer.served_by["adapter"] == answer.domain
        assert answer.served_by["adapter_version"] == 1
        assert answer.served_by["index_version"]

    # 6. The swap under load: no request failed, and new requests got the new version.
    swap = result.replacement
    assert swap is not None and swap.domain == names[0]
    assert swap.failures == []
    assert (swap.swap_status, swap.replaced_version, swap.new_version) == (200, 1, 2)
    assert swap.in_flight_at_swap >= 1
    assert set(swap.versions) <= {1, 2} and swap.versions.get(1, 0) >= 1
    assert swap.after_swap_versions == {2: swap.after_swap_versions.get(2, 0)}
    assert swap.after_swap_versions[2] >= 2
    assert sum(swap.versions.values()) == swap.requests
    state = json.loads((plan.data_dir / "serving" / "state.json").read_text())
    assert state["adapters"][names[0]]["version"] == 2
    assert state["adapters"][names[0]]["path"] == f"{names[0]}/v2"

    # 7. Reports per domain, every configuration asked every question without an error.
    for name in names:
        evaluation = result.evals[name]
        assert evaluation.report.is_file() and evaluation.results.is_file()
        assert sorted(p.name for p in evaluation.plots) == ["configs.png", "latency.png"]
        assert all(p.stat().st_size > 0 for p in evaluation.plots)
        assert list(evaluation.summary) == ["base+rag", "base+rag+1shot", "adapter+rag"]
        for config, summary in evaluation.summary.items():
            assert (summary["questions"], summary["errors"]) == (2, 0), config
        rows = json.loads(evaluation.results.read_text())["results"]
        versions = {r["served_by"]["adapter_version"] for r in rows if r["config"] == "adapter+rag"}
        assert versions == ({2} if name == names[0] else {1})

    # 8. The server stopped gracefully and left no process behind.
    assert result.server_exit_code in (0, -signal.SIGTERM)
    assert result.leftover_processes == []
    assert "Application shutdown complete" in (plan.data_dir / "server.log").read_text()
    summary = result.summary_file.read_text()
    assert "## Stage timings" in summary and "adapter+rag" in summary
    assert "| all | base+rag+1shot | 4 |" in summary  # both domains pooled
    assert "the strongest base configuration, base+rag" in summary  # named in the verdict


def test_demo_file_is_checked_before_anything_runs(demo_inputs) -> None:
    tmp, model, domains = demo_inputs
    demo_file = _demo_file(tmp, model, domains)
    spec = yaml.safe_load(demo_file.read_text())

    spec["demo"]["eval"]["questionz"] = 3
    bad = tmp / "bad.yaml"
    bad.write_text(yaml.safe_dump(spec))
    with pytest.raises(DemoError, match=r"demo\.eval\.questionz: unknown key"):
        prepare(bad)

    del spec["demo"]["eval"]["questionz"]
    spec["demo"]["eval"]["configs"] = ["base+rag", "base+rag+0shot"]
    bad.write_text(yaml.safe_dump(spec))
    with pytest.raises(DemoError, match=r"demo\.eval\.configs: .*base\+rag\+0shot"):
        prepare(bad)

    spec["demo"]["eval"]["configs"] = ["base+rag", "adapter+rag"]
    spec["demo"]["replace"]["domain"] = "nowhere"
    bad.write_text(yaml.safe_dump(spec))
    with pytest.raises(DemoError, match="'nowhere' is not one of the demo's domains"):
        prepare(bad)

    foreign = tmp / "not-the-demos"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(DemoError, match="was not made by `lorag demo`"):
        prepare(demo_file, data_dir=foreign)
    assert (foreign / "precious.txt").read_text() == "keep me"


def test_demo_writes_the_server_config(demo_inputs) -> None:
    tmp, model, domains = demo_inputs
    plan = prepare(_demo_file(tmp, model, domains), data_dir=tmp / "plan-data")
    config, root = plan.config, tmp / "plan-data"
    assert plan.config_file == root / "lorag.yaml"
    assert config.retrieval.qdrant.path == root / "qdrant"
    assert config.training.output_root == config.serving.adapters_root == root / "adapters"
    assert config.eval.report_dir == root / "reports"
    assert config.serving.port == plan.port > 0
    for domain in plan.domains:
        spec = config.serving.domains[domain.name]
        assert (spec.adapter, spec.index) == (domain.name, True)
        assert spec.system_prompt == domain.system_prompt
        assert config.serving.adapters[domain.name] == f"{domain.name}/v1"
    scopes = {key.key.get_secret_value(): key.scopes for key in config.serving.api_keys}
    assert scopes == {plan.keys.chat: ["chat"], plan.keys.admin: ["admin"]}
    # A second run recreates the folder it made.
    (root / "adapters").mkdir()
    prepare(_demo_file(tmp, model, domains), data_dir=root)
    assert not (root / "adapters").exists()
