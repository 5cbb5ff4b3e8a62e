"""Training throughput: lorag's trainer against TRL's `SFTTrainer`, side by side in one run.

    .venv/bin/python benchmarks/training.py                  # tiny model and Gemma 3 270M
    .venv/bin/python benchmarks/training.py --models tiny    # a minute or two
    .venv/bin/python benchmarks/training.py --gemma-steps 6  # a longer Gemma run

Both trainers get the same base model (float32, CPU), the same LoRA (r=16, alpha 32, dropout
0.05, all linear layers), the same retrieval-augmented chat samples (gold passage plus
distractors rendered by `retrieval.prompt.build_messages`, a short answer: the shape of
`lorag train --qa`), the same batch size, AdamW settings and assistant-only loss, no packing.
TRL is configured fairly for a CPU: `bf16=False`, `gradient_checkpointing=False`,
`use_cpu=True` (its defaults are bf16 and gradient checkpointing, several times slower here).

Throughput is non-padding input tokens per second of training steps, measured from the end of
the first step to the end of the last (the first step pays one-off allocation costs), without
evaluation, logging or checkpoint time on either side. On a shared machine the load varies:
the tiny model's runs repeat (`--tiny-repeats`, 3), interleaved, and the table shows each
trainer's best run (`--gemma-repeats`, 1: a TRL step on Gemma takes minutes here).
Goal: lorag >= 1.3x TRL.

Where the speed comes from: lorag runs the output layer only where a loss is taken (the
answer tokens), and Gemma's output layer (640 x 262,144) is most of its compute. TRL 1.16
has a fused chunked head that does the same on GPUs with Triton, but on a CPU it scores
every position (plus entropy and accuracy metrics). The tiny model's output layer is small
(vocabulary 512), so there the two trainers do the same work.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import torch
from rich.console import Console
from rich.table import Table

from contracts.manifest import DataFile
from retrieval.prompt import build_messages
from training.data import Example, build_dataset
from training.settings import LoraSettings, TrainingSettings

console = Console(width=120)
LORA = LoraSettings(r=16, alpha=32, dropout=0.05, target_modules="all-linear")
_WORDS = [
    "quokka",
    "server",
    "ledger",
    "pouch",
    "hop",
    "snapshot",
    "backup",
    "restore",
    "port",
    "console",
    "cluster",
    "node",
    "replica",
    "shard",
    "index",
    "token",
    "adapter",
    "domain",
    "policy",
    "refund",
    "warranty",
    "shipping",
    "invoice",
    "account",
    "balance",
    "limit",
    "transfer",
    "schedule",
    "bucket",
    "key",
    "signing",
    "package",
    "version",
    "release",
]


@dataclass(frozen=True)
class Passage:
    source: str
    heading: str
    text: str


@dataclass
class Measured:
    trainer: str
    steps: int
    tokens: int
    seconds: float
    first_loss: float
    last_loss: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def rag_conversations(count: int, passage_words: int, seed: int = 0) -> list[list[dict]]:
    """Retrieval-augmented samples: 3 passages (1 gold), a question, a short cited answer."""
    rng = random.Random(seed)
    conversations = []
    for i in range(count):
        passages = [
            Passage(
                f"docs/topic-{rng.randrange(50)}.md",
                f"Section {rng.randrange(9)}",
                " ".join(rng.choice(_WORDS) for _ in range(passage_words)) + ".",
            )
            for _ in range(3)
        ]
        answer = " ".join(rng.choice(_WORDS) for _ in range(6))
        question = f"Question {i}: what does the {rng.choice(_WORDS)} {rng.choice(_WORDS)} do?"
        messages = build_messages([{"role": "user", "content": question}], passages)
        conversations.append(
            [*messages, {"role": "assistant", "content": f"The answer is {answer} [2]."}]
        )
    return conversations


def settings_for(steps: int, batch_size: int, max_seq_len: int) -> TrainingSettings:
    return TrainingSettings(
        lora=LORA,
        learning_rate=2e-4,
        schedule="constant",
        warmup_steps=0,
        batch_size=batch_size,
        max_steps=steps,
        max_seq_len=max_seq_len,
        validation_fraction=0.0,
        save_every=10_000,
        seed=0,
    )


def run_lorag(model_dir: Path, conversations: list, settings: TrainingSettings) -> Measured:
    from training.trainer import train

    examples = [Example(c, f"bench:{i}") for i, c in enumerate(conversations)]
    dataset = build_dataset(
        [(examples, DataFile(path="bench", sha256="0" * 64, records=len(examples)))], 0.0
    )
    reports = []
    out = Path(tempfile.mkdtemp(prefix="lorag-bench-train-"))
    try:
        train(model_dir, dataset, settings, out / "adapter", name="bench", on_step=reports.append)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    first, last = reports[0], reports[-1]
    return Measured(
        "lorag",
        len(reports) - 1,
        last.tokens - first.tokens,
        last.train_seconds - first.train_seconds,
        first.loss,
        last.loss,
    )


def run_trl(model_dir: Path, conversations: list, settings: TrainingSettings) -> Measured:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[tuple[float, int]] = []
            self.losses: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append((time.perf_counter(), state.num_input_tokens_seen))

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    out = Path(tempfile.mkdtemp(prefix="lorag-bench-trl-"))
    clock = Clock()
    try:
        torch.manual_seed(settings.seed)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        config = SFTConfig(
            output_dir=str(out),
            per_device_train_batch_size=settings.batch_size,
            gradient_accumulation_steps=1,
            max_steps=settings.max_steps,
            learning_rate=settings.learning_rate,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=settings.weight_decay,
            max_grad_norm=settings.max_grad_norm,
            optim="adamw_torch",
            bf16=False,
            gradient_checkpointing=False,
            use_cpu=True,
            assistant_only_loss=True,
            packing=False,
            max_length=settings.max_seq_len,
            logging_steps=1,
            save_strategy="no",
            eval_strategy="no",
            report_to=[],
            seed=settings.seed,
            dataloader_num_workers=0,
            include_num_input_tokens_seen="non_padding",
            disable_tqdm=True,
        )
        peft_config = LoraConfig(
            r=LORA.r,
            lora_alpha=LORA.alpha,
            lora_dropout=LORA.dropout,
            target_modules=LORA.target_modules,
            task_type="CAUSAL_LM",
        )
        trainer = SFTTrainer(
            model=model,
            args=config,
            train_dataset=Dataset.from_list([{"messages": c} for c in conversations]),
            processing_class=AutoTokenizer.from_pretrained(model_dir),
            peft_config=peft_config,
            callbacks=[clock],
        )
        trainer.remove_callback(PrinterCallback)  # no log dict per step on stdout
        trainer.train()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    (t0, n0), (t1, n1) = clock.ends[0], clock.ends[-1]
    return Measured("TRL SFTTrainer", len(clock.ends) - 1, n1 - n0, t1 - t0, clock.losses[0],
                    clock.losses[-1])  # fmt: skip


def model_dir_for(name: str, work: Path, cache_dir: Path) -> Path:
    if name == "tiny":
        from tests.support.tiny_models import build_tiny_model

        return build_tiny_model(work / "tiny-llama", arch="llama")
    from training.base_models import resolve_base_model

    with console.status("Resolving Gemma 3 270M (the first time converts the GGUF: ~3 minutes)"):
        return resolve_base_model("gemma-3-270m", cache_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,gemma", help="comma-separated: tiny, gemma")
    parser.add_argument("--tiny-steps", type=int, default=30)
    parser.add_argument("--gemma-steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--passage-words", type=int, default=40, help="words per passage")
    parser.add_argument("--max-seq-len", type=int, default=1024)
    parser.add_argument(
        "--tiny-repeats", type=int, default=3, help="runs per trainer, interleaved; best shown"
    )
    parser.add_argument("--gemma-repeats", type=int, default=1)
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / ".lorag-cache" / "models")
    args = parser.parse_args()

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import datasets

    datasets.disable_progress_bars()
    torch.set_num_threads(torch.get_num_threads())
    rows = []
    work = Path(tempfile.mkdtemp(prefix="lorag-bench-models-"))
    try:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            steps = args.tiny_steps if name == "tiny" else args.gemma_steps
            repeats = args.tiny_repeats if name == "tiny" else args.gemma_repeats
            model_dir = model_dir_for(name, work, args.cache_dir)
            settings = settings_for(steps, args.batch_size, args.max_seq_len)
            conversations = rag_conversations(steps * args.batch_size, args.passage_words)
            best: dict[str, Measured] = {}
            for attempt in range(repeats):  # interleaved: load changes hit both alike
                for runner in (run_lorag, run_trl):
                    with console.status(f"{name}: {runner.__name__} ({steps} steps)"):
                        done = runner(model_dir, conversations, settings)
                    console.print(
                        f"{name} #{attempt + 1}: {done.trainer}: "
                        f"{done.seconds / done.steps:.2f} s/step, {done.tokens_per_s:,.0f} tokens/s"
                    )
                    if (
                        done.trainer not in best
                        or done.tokens_per_s > best[done.trainer].tokens_per_s
                    ):
                        best[done.trainer] = done
            results = list(best.values())
            rows.append((name, repeats, results))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    table = Table(title="LoRA training throughput (CPU, float32; first step excluded)")
    for column in (
        "model",
        "trainer",
        "steps",
        "tokens",
        "s/step",
        "tokens/s",
        "loss first → last",
        "speed-up",
    ):
        table.add_column(column, justify="right" if column not in ("model", "trainer") else "left")
    for name, repeats, (ours, theirs) in rows:
        for result in (ours, theirs):
            speedup = result.tokens_per_s / theirs.tokens_per_s
            table.add_row(
                name if repeats == 1 else f"{name} (best of {repeats})",
                result.trainer,
                str(result.steps),
                f"{result.tokens:,}",
                f"{result.seconds / result.steps:.2f}",
                f"{result.tokens_per_s:,.0f}",
                f"{result.first_loss:.3f} → {result.last_loss:.3f}",
                f"{speedup:.2f}x",
            )
    console.print(table)
    console.print(
        f"batch {args.batch_size}, LoRA r={LORA.r} on all linear layers, "
        f"{torch.get_num_threads()} CPU threads; goal: lorag >= 1.3x TRL"
    )


if __name__ == "__main__":
    main()
