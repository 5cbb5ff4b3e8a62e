"""Adapter folders: the manifest written with them, loading them safely, merging them."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel

from contracts.manifest import AdapterManifest, fingerprint_model
from training.model import load_model, load_tokenizer


def lorag_version() -> str:
    try:
        return importlib.metadata.version("lorag")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def lora_summary(model: PeftModel) -> dict[str, Any]:
    """The LoRA hyper-parameters of a PEFT model's active adapter, as the manifest keeps them."""
    config = model.peft_config[model.active_adapter]
    return {
        "r": config.r,
        "alpha": config.lora_alpha,
        "dropout": config.lora_dropout,
        "target_modules": sorted({name.rsplit(".", 1)[-1] for name in config.target_modules}),
    }


def check_adapter(adapter_dir: Path, base_dir: Path) -> AdapterManifest:
    """The adapter's manifest, after checking it was trained on the model in `base_dir`.

    Raises `AdapterCompatibilityError` (a ValueError) for a missing manifest or another base.
    """
    manifest = AdapterManifest.load(adapter_dir)
    manifest.check_base(fingerprint_model(base_dir), str(base_dir))
    return manifest


def load_adapter_model(adapter_dir: Path, base_dir: Path, dtype: str = "float32") -> PeftModel:
    """The base model with the adapter applied, for inference; refuses a foreign base."""
    check_adapter(adapter_dir, base_dir)
    base = load_model(base_dir, dtype)
    model = PeftModel.from_pretrained(base, adapter_dir)
    model.eval()
    return model


def merge_adapter(adapter_dir: Path, base_dir: Path, out_dir: Path, dtype: str = "float32") -> Path:
    """Write the base model with the adapter merged in as a standalone checkpoint.

    The folder is written beside `out_dir` and renamed into place, so a failed export leaves
    nothing behind; an existing non-empty `out_dir` is refused.
    """
    adapter_dir, base_dir, out_dir = Path(adapter_dir), Path(base_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir}: already exists and is not empty; choose another folder")
    manifest = check_adapter(adapter_dir, base_dir)
    model = load_adapter_model(adapter_dir, base_dir, dtype)
    merged = model.merge_and_unload()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        with torch.no_grad():
            merged.save_pretrained(work, safe_serialization=True)
        load_tokenizer(base_dir).save_pretrained(work)
        provenance = {
            "merged_from": manifest.name,
            "adapter_dir": str(adapter_dir),
            "base_model": manifest.base_model,
            "base_fingerprint": manifest.base_fingerprint,
            "prompt_format": manifest.prompt_format,
        }
        (work / "lorag-merged.json").write_text(json.dumps(provenance, indent=2) + "\n")
        work.chmod(0o755)
        if out_dir.exists():
            out_dir.rmdir()
        os.rename(work, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_dir
