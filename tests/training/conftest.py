"""Shared fixtures: tiny models (built once per session), small data sets, one trained adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.tiny_models import build_tiny_model
from training.data import load_dataset
from training.settings import LoraSettings, TrainingSettings
from training.trainer import TrainResult, train

FACTS = [
    ("refund window", "fourteen days"),
    ("warranty period", "two years"),
    ("shipping time", "three days"),
    ("support hours", "nine to five"),
    ("price of the adapter", "ten euro"),
    ("default port", "eight thousand"),
    ("index version", "version two"),
    ("token limit", "four thousand"),
]


def chat_records(count: int = 32) -> list[dict]:
    """Short question/answer conversations, some with a system prompt."""
    records = []
    for i in range(count):
        topic, answer = FACTS[i % len(FACTS)]
        messages = [
            {"role": "user", "content": f"Question {i}: what is the {topic}?"},
            {"role": "assistant", "content": f"The {topic} is {answer}."},
        ]
        if i % 4 == 0:
            messages.insert(0, {"role": "system", "content": "You answer in one sentence."})
        records.append({"messages": messages})
    return records


def write_jsonl(path: Path, records: list[dict | str]) -> Path:
    """Write records (dicts as JSON, strings verbatim) one per line."""
    with path.open("w") as out:
        for record in records:
            out.write((record if isinstance(record, str) else json.dumps(record)) + "\n")
    return path


def tiny_settings(**overrides) -> TrainingSettings:
    values = {
        "lora": LoraSettings(r=8, alpha=16, dropout=0.0),
        "learning_rate": 5e-3,
        "batch_size": 4,
        "max_steps": 24,
        "warmup_steps": 2,
        "eval_every": 8,
        "save_every": 8,
        "validation_fraction": 0.2,
    }
    values.update(overrides)
    return TrainingSettings(**values)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "llama", arch="llama")


@pytest.fixture(scope="session")
def other_tiny_model(tmp_path_factory) -> Path:
    """Same architecture and tokenizer, other weights: a different base model."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "llama-seed1", arch="llama", seed=1)


@pytest.fixture(scope="session")
def chat_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "chat.jsonl", chat_records())


@pytest.fixture(scope="session")
def trained(tiny_model, chat_file, tmp_path_factory) -> TrainResult:
    """One adapter trained on the tiny model, shared by the tests that inspect its results."""
    dataset = load_dataset([chat_file], validation_fraction=0.2)
    out = tmp_path_factory.mktemp("adapters") / "facts"
    return train(
        tiny_model, dataset, tiny_settings(), out, name="facts", domain="shop", base_model="tiny"
    )
