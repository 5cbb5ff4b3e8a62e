"""The training loop on a tiny model: learning, resume, manifest, base checks, export."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from datetime import UTC, datetime

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from contracts.manifest import (
    MANIFEST_FILE,
    AdapterCompatibilityError,
    AdapterManifest,
    fingerprint_model,
)
from retrieval.prompt import PROMPT_FORMAT
from tests.training.conftest import tiny_settings
from training.adapters import check_adapter, load_adapter_model, merge_adapter
from training.batches import tokenize_conversation
from training.data import load_dataset
from training.model import load_tokenizer
from training.trainer import LOG_FILE, TrainingError, latest_checkpoint, train

QUESTION = [{"role": "user", "content": "Question 3: what is the support hours?"}]


def _greedy(model, tokenizer, messages, new_tokens=8) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if not torch.is_tensor(ids) else ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False)
    return out[0, ids.shape[1] :].tolist()


def test_loss_goes_down(trained):
    history = trained.state.history
    assert len(history) == 24
    # A random tiny model's logits are nearly uniform (loss ~ ln 512 = 6.2) and LoRA cannot
    # rescale its final norm, so about 5 is as low as it goes: ask for a clear drop.
    first, last = history[0]["loss"], sum(h["loss"] for h in history[-4:]) / 4
    assert last < first - 0.3, (first, last)
    evals = [h["val_loss"] for h in history if h["val_loss"] is not None]
    assert len(evals) == 3 and evals[0] > evals[1] > evals[2], evals


def test_the_adapter_changes_the_output_toward_the_training_answers(trained, tiny_model):
    tokenizer = load_tokenizer(tiny_model)
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    adapted = load_adapter_model(trained.adapter_dir, tiny_model)
    answer = [*QUESTION, {"role": "assistant", "content": "The support hours is nine to five."}]
    example = tokenize_conversation(tokenizer, answer)
    ids = torch.tensor([example.input_ids])
    labels = torch.tensor([example.labels])
    with torch.no_grad():
        base_loss = base(input_ids=ids, labels=labels).loss
        adapted_loss = adapted(input_ids=ids, labels=labels).loss
    assert adapted_loss < base_loss - 0.3, (base_loss, adapted_loss)
    assert _greedy(adapted, tokenizer, QUESTION) != _greedy(base, tokenizer, QUESTION)


def test_manifest_contents(trained, tiny_model, chat_file):
    manifest = AdapterManifest.load(trained.adapter_dir)
    assert manifest == trained.manifest
    assert manifest.name == "facts" and manifest.domain == "shop"
    assert manifest.base_model == "tiny"
    assert manifest.base_fingerprint == fingerprint_model(tiny_model)
    assert manifest.prompt_format == PROMPT_FORMAT
    assert manifest.lora["r"] == 8 and manifest.lora["alpha"] == 16
    assert manifest.lora["target_modules"] == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    [data] = manifest.data
    assert data.path == str(chat_file) and data.records == 32
    assert data.sha256 == hashlib.sha256(chat_file.read_bytes()).hexdigest()
    m = manifest.metrics
    assert m["steps"] == 24 and m["train_examples"] + m["validation_examples"] == 32
    assert m["val_loss"] is not None and m["best_val_loss"] <= m["val_loss"]
    assert m["tokens"] > 0 and m["tokens_per_s"] > 0
    assert manifest.lorag_version == importlib.metadata.version("lorag")
    assert (datetime.now(UTC) - manifest.created_at).total_seconds() < 3600
    assert len((trained.adapter_dir / LOG_FILE).read_text().splitlines()) == 24
    config = json.loads((trained.adapter_dir / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["peft_type"] == "LORA"


def test_a_different_base_model_is_refused(trained, other_tiny_model, tmp_path):
    with pytest.raises(AdapterCompatibilityError, match="trained on base model 'tiny'"):
        load_adapter_model(trained.adapter_dir, other_tiny_model)
    with pytest.raises(AdapterCompatibilityError, match="retrain it on this base model"):
        merge_adapter(trained.adapter_dir, other_tiny_model, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    (tmp_path / "no-manifest").mkdir()
    with pytest.raises(AdapterCompatibilityError, match="no adapter manifest"):
        check_adapter(tmp_path / "no-manifest", other_tiny_model)


def test_merged_export_matches_the_adapter(trained, tiny_model, tmp_path):
    out = merge_adapter(trained.adapter_dir, tiny_model, tmp_path / "merged")
    assert json.loads((out / "lorag-merged.json").read_text())["merged_from"] == "facts"
    tokenizer = load_tokenizer(out)
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    adapted = load_adapter_model(trained.adapter_dir, tiny_model)
    ids = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if not torch.is_tensor(ids) else ids
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapted(ids).logits, rtol=1e-4, atol=1e-4)
    with pytest.raises(FileExistsError):
        merge_adapter(trained.adapter_dir, tiny_model, out)


def _lora_weights(folder) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


def test_resume_continues_exactly_where_it_stopped(tiny_model, chat_file, tmp_path):
    dataset = load_dataset([chat_file], validation_fraction=0.2)
    settings = tiny_settings(max_steps=4, save_every=2, eval_every=3, grad_accumulation=2)
    whole = train(tiny_model, dataset, settings, tmp_path / "whole", name="whole")

    class Crash(Exception):
        pass

    def crash_after_step_2(report):
        if report.step == 2:
            raise Crash

    with pytest.raises(Crash):
        train(
            tiny_model, dataset, settings, tmp_path / "cut", name="cut", on_step=crash_after_step_2
        )
    assert latest_checkpoint(tmp_path / "cut").name == "step-000002"
    assert not (tmp_path / "cut" / MANIFEST_FILE).exists()  # no manifest: not a usable adapter
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_model, dataset, settings, tmp_path / "cut", name="cut")

    steps = []
    resumed = train(
        tiny_model, dataset, settings, tmp_path / "cut", name="cut", resume=True,
        on_step=lambda report: steps.append(report.step),
    )  # fmt: skip
    assert steps == [3, 4]
    assert [h["loss"] for h in resumed.state.history] == [h["loss"] for h in whole.state.history]
    assert resumed.state.tokens == whole.state.tokens
    a, b = _lora_weights(tmp_path / "whole"), _lora_weights(tmp_path / "cut")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)

    other = load_dataset([chat_file], validation_fraction=0.5)
    with pytest.raises(TrainingError, match="other data"):
        train(tiny_model, other, settings, tmp_path / "cut", name="cut", resume=True)
    with pytest.raises(TrainingError, match="no checkpoint"):
        train(tiny_model, dataset, settings, tmp_path / "new", name="new", resume=True)


def test_gradient_accumulation_matches_a_larger_batch(tiny_model, chat_file, tmp_path):
    dataset = load_dataset([chat_file], validation_fraction=0.2)
    one = train(tiny_model, dataset, tiny_settings(max_steps=2, batch_size=4), tmp_path / "a",
                name="a")  # fmt: skip
    two = train(
        tiny_model, dataset, tiny_settings(max_steps=2, batch_size=2, grad_accumulation=2),
        tmp_path / "b", name="b",
    )  # fmt: skip
    assert one.state.tokens == two.state.tokens
    a, b = _lora_weights(tmp_path / "a"), _lora_weights(tmp_path / "b")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)


def test_early_stopping_keeps_the_best_evaluated_weights(tiny_model, chat_file, tmp_path):
    dataset = load_dataset([chat_file], validation_fraction=0.2)
    settings = tiny_settings(
        max_steps=20, eval_every=1, early_stopping_patience=2, early_stopping_min_delta=100.0
    )
    result = train(tiny_model, dataset, settings, tmp_path / "early", name="early")
    # Step 1 sets the best; no later evaluation can improve on it by 100.
    assert result.state.step == 3 and result.state.stopped_early
    assert result.manifest.metrics["best_step"] == 1
    saved = _lora_weights(tmp_path / "early")
    last = latest_checkpoint(tmp_path / "early")
    assert last.name == "step-000003"
    best = torch.load(last / "trainer.pt", weights_only=False)["best"]
    at_step_3 = _lora_weights(last)
    assert saved.keys() == best.keys() == at_step_3.keys()
    for key in saved:
        torch.testing.assert_close(saved[key], best[key], rtol=0, atol=0)
    assert any(not torch.equal(saved[key], at_step_3[key]) for key in saved)


def test_completion_layout_is_trained_and_recorded(tiny_model, chat_file, tmp_path):
    from retrieval.prompt import prompt_format
    from training.batches import TemplateError

    dataset = load_dataset([chat_file], validation_fraction=0.0)
    settings = tiny_settings(max_steps=2, validation_fraction=0.0)
    result = train(tiny_model, dataset, settings, tmp_path / "plain", name="plain",
                   prompt_layout="completion")
    assert AdapterManifest.load(result.adapter_dir).prompt_format == prompt_format("completion")

    multi = tmp_path / "multi.jsonl"
    multi.write_text(json.dumps({"messages": [
        {"role": "user", "content": "List two colours."},
        {"role": "assistant", "content": "red\nblue"},
    ]}) + "\n")
    with pytest.raises(TemplateError, match=r"multi\.jsonl:1: .*spans several lines"):
        train(tiny_model, load_dataset([multi], validation_fraction=0.0), settings,
              tmp_path / "multi", name="multi", prompt_layout="completion")
