"""Base model resolution: local folders, the HF cache, and the real Gemma 3 270M conversion."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from contracts.manifest import AdapterManifest, fingerprint_model
from tests.training.conftest import tiny_settings
from training import base_models
from training.base_models import BaseModelError, resolve_base_model
from training.data import Example, build_dataset
from training.model import load_model, load_tokenizer
from training.trainer import train

REPO_ROOT = Path(__file__).resolve().parents[2]
GEMMA_CACHE = REPO_ROOT / ".lorag-cache" / "models"  # git-ignored; reruns reuse the conversion


def test_a_local_folder_is_used_as_it_is(tiny_model, tmp_path):
    assert resolve_base_model(str(tiny_model), tmp_path) == tiny_model
    assert list(tmp_path.iterdir()) == []


def test_a_folder_without_chat_template_is_a_completion_model_and_without_weights_refused(
    tiny_model, tmp_path
):
    from retrieval.prompt import resolve_layout

    plain = tmp_path / "plain"
    shutil.copytree(tiny_model, plain)
    (plain / "chat_template.jinja").unlink()
    assert resolve_base_model(str(plain), tmp_path) == plain
    assert resolve_layout("auto", plain) == "completion"
    with pytest.raises(ValueError, match="has no chat template; use completion"):
        resolve_layout("chat", plain)
    (plain / "model.safetensors").unlink()
    with pytest.raises(BaseModelError, match="no weight files"):
        resolve_base_model(str(plain), tmp_path)


def test_unknown_names_and_uncached_hub_ids_are_refused_offline(tmp_path):
    with pytest.raises(BaseModelError, match="no such folder"):
        resolve_base_model("./missing-model", tmp_path)
    with pytest.raises(BaseModelError, match="not in the local Hugging Face cache"):
        resolve_base_model("lorag-tests/no-such-model", tmp_path)


def test_an_interrupted_conversion_leaves_nothing_behind(tmp_path, monkeypatch):
    def fail(work: Path, dtype: torch.dtype) -> None:
        (work / "model").mkdir()
        (work / "model" / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(base_models, "_convert_gemma_270m", fail)
    with pytest.raises(KeyboardInterrupt):
        resolve_base_model("gemma-3-270m", tmp_path / "models")
    assert list((tmp_path / "models").iterdir()) == []


def test_gguf_files_are_read_into_memory_during_conversion_only(tmp_path):
    import gguf.gguf_reader as reader
    import numpy as np

    data = tmp_path / "blob.bin"
    data.write_bytes(bytes(range(16)))
    original = reader.np
    with base_models._gguf_read_into_memory():
        loaded = reader.np.memmap(data, mode="r")
        assert type(loaded) is np.ndarray and loaded.dtype == np.uint8
        assert loaded.tolist() == list(range(16))
        assert reader.np.float32 is np.float32  # everything else is numpy's own
    assert reader.np is original


@pytest.mark.slow
def test_real_gemma_270m_converts_continues_sensibly_and_trains(tmp_path):
    path = resolve_base_model("gemma-3-270m", GEMMA_CACHE)  # 2-3 minutes the first time
    assert path == GEMMA_CACHE / "gemma-3-270m"
    assert resolve_base_model("gemma-3-270m", GEMMA_CACHE) == path  # reused
    tokenizer = load_tokenizer(path)
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    assert ids[0, 0].item() == tokenizer.bos_token_id == 2  # the GGUF tokenizer forgets it
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                         add_generation_prompt=True)  # fmt: skip
    assert chat == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    model = load_model(path)
    assert model.generation_config.eos_token_id == [1, 106]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=8, do_sample=False)
    continuation = tokenizer.decode(out[0, ids.shape[1] :])
    assert continuation.startswith(" the capital of"), continuation
    del model

    examples = [
        Example([{"role": "user", "content": f"What is the code word {i}?"},
                 {"role": "assistant", "content": f"The code word {i} is quokka."}], f"mem:{i}")
        for i in range(4)
    ]  # fmt: skip
    dataset = build_dataset([(examples, _data_file())], validation_fraction=0.0)
    settings = tiny_settings(
        lora=tiny_settings().lora.model_copy(update={"r": 8}), learning_rate=1e-3,
        max_steps=4, warmup_steps=0, batch_size=4, schedule="constant",
    )  # fmt: skip
    result = train(path, dataset, settings, tmp_path / "gemma", name="g", base_model="gemma-3-270m")
    losses = [row["loss"] for row in result.state.history]
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    manifest = AdapterManifest.load(tmp_path / "gemma")
    assert manifest.base_model == "gemma-3-270m"
    assert manifest.base_fingerprint == fingerprint_model(path)


def _data_file():
    from contracts.manifest import DataFile

    return DataFile(path="memory", sha256="0" * 64, records=4)
