"""Perplexity of held-out domain text under the base model and under each adapter.

Sliding window (transformers + PEFT): each file is tokenized as a whole; windows of
`max_length` tokens start every `stride` tokens; each token is scored once, by the first window
that reaches it, with as much left context as that window holds (at least
`max_length - stride` tokens once the text is longer than one window). The first token of a file
has no left context and is not scored. Perplexity = exp(total negative log-likelihood / scored
tokens), per file and over all files together.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from contracts.manifest import MANIFEST_FILE, AdapterManifest, fingerprint_model
from eval.report import Report, Table, bar_chart

TEXT_SUFFIXES = (".md", ".markdown", ".txt")


@dataclass(frozen=True)
class TextScore:
    """Negative log-likelihood of one text under one model."""

    nll: float
    tokens: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll / self.tokens) if self.tokens else math.nan


def collect_text_files(paths: Iterable[Path]) -> list[Path]:
    """The files named, plus the .md/.txt files under any folder named, sorted, de-duplicated."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES)
        elif path.is_file():
            if path.suffix.lower() not in TEXT_SUFFIXES:
                raise ValueError(f"{path}: not a text file (expected {', '.join(TEXT_SUFFIXES)})")
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    files = list(dict.fromkeys(found))
    if not files:
        raise ValueError("no held-out text files (.md, .markdown, .txt) to score")
    return files


@torch.no_grad()
def sliding_window_nll(
    model: torch.nn.Module, input_ids: Sequence[int], max_length: int, stride: int
) -> TextScore:
    """Total negative log-likelihood of `input_ids[1:]` with a sliding window (see module doc)."""
    if stride < 1 or stride >= max_length:
        raise ValueError("stride must be at least 1 and smaller than max_length")
    ids = torch.tensor([list(input_ids)], dtype=torch.long)
    length = ids.shape[1]
    device = next(model.parameters()).device
    total = 0.0
    scored = 0
    prev_end = 1  # token 0 has no context
    begin = 0
    while prev_end < length:
        end = min(begin + max_length, length)
        window = ids[:, begin:end].to(device)
        # Tokens prev_end..end-1 are scored, predicted by the logits at prev_end-1..end-2: only
        # the last `end - prev_end + 1` positions go through the output layer (the last of them
        # predicts past the window and is dropped).
        keep = end - prev_end + 1
        logits = model(input_ids=window, logits_to_keep=keep).logits[0, :-1].float()
        targets = window[0, prev_end - begin :]
        total += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
        scored += int(targets.numel())
        prev_end = end
        begin += stride
    return TextScore(nll=total, tokens=scored)


@dataclass
class PerplexityResult:
    model: str  # "base" or an adapter's name
    path: str
    files: dict[str, TextScore]

    @property
    def overall(self) -> TextScore:
        return TextScore(
            nll=sum(s.nll for s in self.files.values()),
            tokens=sum(s.tokens for s in self.files.values()),
        )


def check_adapter(adapter_dir: Path, base_dir: Path) -> None:
    """Refuse an adapter folder that is not a PEFT adapter or was trained on another base."""
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter_dir}: not a PEFT adapter (no adapter_config.json)")
    if (adapter_dir / MANIFEST_FILE).is_file():
        AdapterManifest.load(adapter_dir).check_base(fingerprint_model(base_dir), str(base_dir))


def adapter_names(adapter_dirs: Sequence[Path]) -> list[str]:
    """Distinct display names: the folder name, with its parent's when names collide."""
    names = [p.name for p in adapter_dirs]
    if len(set(names)) == len(names):
        return names
    names = [f"{p.parent.name}/{p.name}" for p in adapter_dirs]
    if len(set(names)) == len(names):
        return names
    return [f"{p.name}#{i}" for i, p in enumerate(adapter_dirs, start=1)]


def evaluate_perplexity(
    base_dir: Path,
    adapter_dirs: Sequence[Path],
    text_files: Sequence[Path],
    max_length: int,
    stride: int,
    progress: Callable[[str], None] | None = None,
) -> list[PerplexityResult]:
    """Perplexity of each text file under the base model and under each adapter on it."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir = Path(base_dir)
    adapter_dirs = [Path(a) for a in adapter_dirs]
    for adapter in adapter_dirs:
        check_adapter(adapter, base_dir)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model.eval()
    window = min(max_length, getattr(model.config, "max_position_embeddings", max_length))
    step = min(stride, window - 1)

    encoded: dict[str, list[int]] = {}
    for path in text_files:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        if tokenizer.bos_token_id is not None and (not ids or ids[0] != tokenizer.bos_token_id):
            ids = [tokenizer.bos_token_id, *ids]  # score the first real token too
        if len(ids) < 2:
            raise ValueError(f"{path}: too short to score (fewer than 2 tokens)")
        encoded[str(path)] = ids

    def score_all(label: str, scorer: torch.nn.Module) -> dict[str, TextScore]:
        scores = {}
        for name, ids in encoded.items():
            if progress:
                progress(f"{label}: {name}")
            scores[name] = sliding_window_nll(scorer, ids, window, step)
        return scores

    results = [PerplexityResult("base", str(base_dir), score_all("base", model))]
    if not adapter_dirs:
        return results
    names = adapter_names(adapter_dirs)
    peft_model = PeftModel.from_pretrained(model, adapter_dirs[0], adapter_name=names[0])
    for name, adapter in zip(names[1:], adapter_dirs[1:], strict=True):
        peft_model.load_adapter(adapter, adapter_name=name)
    peft_model.eval()
    for name, adapter in zip(names, adapter_dirs, strict=True):
        peft_model.set_adapter(name)
        results.append(PerplexityResult(name, str(adapter), score_all(name, peft_model)))
    return results


def build_report(results: Sequence[PerplexityResult], params: dict[str, Any]) -> Report:
    """Tables, the side-by-side bar chart and per-file scores of a perplexity eval."""
    files = list(results[0].files) if results else []
    base = results[0].overall.perplexity if results else math.nan
    table = Table(
        title="Perplexity of held-out text",
        headers=["model", "perplexity", "vs base", "tokens", *[Path(f).name for f in files]],
        rows=[
            [
                r.model,
                r.overall.perplexity,
                r.overall.perplexity / base if base else None,
                r.overall.tokens,
                *[r.files[f].perplexity for f in files],
            ]
            for r in results
        ],
        note=(
            f"Sliding window of {params.get('max_length')} tokens, stride "
            f"{params.get('stride')}; lower is better. 'vs base' is the ratio to the base model."
        ),
    )
    figure = bar_chart(
        "Perplexity: base vs adapters",
        ["all files", *[Path(f).name for f in files]],
        {
            r.model: [r.overall.perplexity, *[r.files[f].perplexity for f in files]]
            for r in results
        },
        ylabel="perplexity",
        ylim=None,
    )
    rows = [
        {
            "model": r.model,
            "path": r.path,
            "file": f,
            "nll": s.nll,
            "tokens": s.tokens,
            "perplexity": s.perplexity,
        }
        for r in results
        for f, s in r.files.items()
    ]
    summary = {
        r.model: {"perplexity": r.overall.perplexity, "tokens": r.overall.tokens, "path": r.path}
        for r in results
    }
    return Report(
        kind="perplexity",
        title="Perplexity eval",
        params=params,
        summary=summary,
        results=rows,
        tables=[table],
        figures={"perplexity.png": figure},
    )
