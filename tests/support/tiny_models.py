"""Tiny causal LMs the test suite builds itself: no download, a few seconds on a CPU.

A byte-level BPE tokenizer is trained on the fly with `tokenizers`, then wrapped with the
same special tokens and chat template lorag gives a real base model. The model is a
few-layer Llama (or Gemma 3) with random weights, saved as float32 safetensors so that
transformers, PEFT and vLLM all load the same folder.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast

from training.chat_template import DEFAULT_CHAT_TEMPLATE

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]

_WORDS = [
    "the",
    "a",
    "an",
    "of",
    "to",
    "in",
    "is",
    "are",
    "was",
    "be",
    "it",
    "that",
    "this",
    "for",
    "on",
    "with",
    "as",
    "by",
    "at",
    "from",
    "or",
    "and",
    "not",
    "lorag",
    "adapter",
    "index",
    "server",
    "model",
    "domain",
    "question",
    "answer",
    "context",
    "source",
    "chunk",
    "token",
    "train",
    "retrieval",
    "vector",
    "search",
    "query",
    "document",
    "heading",
    "section",
    "policy",
    "refund",
    "product",
    "warranty",
    "shipping",
    "days",
    "hours",
    "price",
    "support",
    "ticket",
    "error",
    "config",
    "file",
    "path",
    "version",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "red",
    "green",
    "blue",
    "quick",
    "brown",
    "fox",
]


def sample_corpus(lines: int = 2000, seed: int = 0) -> list[str]:
    """Deterministic pseudo-English lines to train a tokenizer on."""
    rng = random.Random(seed)
    corpus = []
    for _ in range(lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 16))]
        corpus.append(" ".join(words).capitalize() + rng.choice([".", "?", "!", ":"]))
    return corpus


def build_tokenizer(
    out_dir: Path, vocab_size: int = 512, extra_text: Iterable[str] = ()
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer that prepends `<bos>`, with the lorag chat template."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([*sample_corpus(), *extra_text], trainer=trainer)
    bos_id = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
    )
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def build_tiny_model(
    out_dir: Path, arch: str = "llama", seed: int = 0, extra_text: Iterable[str] = ()
) -> Path:
    """Write a tiny model + tokenizer folder to `out_dir` and return it.

    `arch` is `llama` (2 layers, hidden 64, head size 32: the smallest the vLLM CPU
    attention kernels accept) or `gemma3` (the real default's architecture, as small).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(out_dir, extra_text=extra_text)
    common = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 32,
        "max_position_embeddings": 2048,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": False,
    }
    if arch == "llama":
        from transformers import LlamaConfig

        config = LlamaConfig(**common)
    elif arch == "gemma3":
        from transformers import Gemma3TextConfig

        config = Gemma3TextConfig(**common, sliding_window=64, query_pre_attn_scalar=32)
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}; use 'llama' or 'gemma3'")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # Stop at the end of an assistant turn as well as at <eos>.
    stop_ids = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")]
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=stop_ids,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / "lorag-tiny.json").write_text(json.dumps({"arch": arch, "seed": seed}))
    return out_dir
