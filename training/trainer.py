"""The training loop: LoRA on a causal LM with the loss on assistant tokens only.

One readable loop (see `train`) rather than a framework: seeded micro-batches, gradient
accumulation, AdamW with a warm-up schedule from transformers, evaluation every N steps,
early stopping on the validation loss, checkpoints that `resume=True` continues from exactly
(adapter weights, optimizer, scheduler, RNG and data position), and a rich progress bar.

The same loop runs on several GPUs under `accelerate launch` (DDP; see docs/training.md):
`accelerate` wraps the loss module, each process takes every N-th micro-batch, and only the
main process writes files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict
from peft.utils import load_peft_weights
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from transformers import get_scheduler

from contracts.manifest import MANIFEST_FILE, AdapterManifest, fingerprint_model
from retrieval.prompt import PromptLayout, prompt_format, resolve_layout
from training.adapters import lora_summary, lorag_version
from training.batches import (
    Batch,
    TemplateError,
    TokenizedExample,
    epoch_batches,
    eval_batches,
    tokenize_conversation,
)
from training.data import Dataset, Example, conversation_key
from training.model import TargetLoss, add_lora, load_model, load_tokenizer
from training.settings import TrainingSettings

CHECKPOINTS = "checkpoints"
LOG_FILE = "train-log.jsonl"
_SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


class TrainingError(RuntimeError):
    """Training cannot start or continue as asked."""


@dataclass
class StepReport:
    """What a step callback receives after each optimizer step."""

    step: int
    total_steps: int
    loss: float  # mean loss per target token of this step
    learning_rate: float
    tokens_per_s: float  # so far, over the time spent in training steps
    tokens: int = 0  # so far (non-padding input tokens, all processes)
    train_seconds: float = 0.0  # so far (steps only: no evaluation or checkpoints)
    val_loss: float | None = None  # set on evaluation steps


@dataclass
class TrainState:
    """Everything besides tensors that a checkpoint restores."""

    step: int = 0
    cursor: int = 0  # micro-batches consumed, counted over all processes and epochs
    tokens: int = 0
    train_seconds: float = 0.0
    best_val_loss: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TrainResult:
    adapter_dir: Path
    manifest: AdapterManifest
    state: TrainState
    warnings: list[str]


class BatchStream:
    """Micro-batches of consecutive epochs, addressed by one global index (the cursor)."""

    def __init__(
        self, examples: Sequence[TokenizedExample], settings: TrainingSettings, pad_id: int
    ):
        self.examples, self.settings, self.pad_id = examples, settings, pad_id
        self.starts = [0]  # global index of each computed epoch's first micro-batch
        self.epoch, self.batches = -1, []

    def _epoch(self, epoch: int) -> list[Batch]:
        s = self.settings
        return epoch_batches(
            self.examples, s.batch_size, self.pad_id, s.seed, epoch, s.packing, s.max_seq_len
        )

    def epoch_length(self) -> int:
        """Micro-batches in the first epoch (packing can vary it slightly between epochs)."""
        self[0]
        return self.starts[1]

    def __getitem__(self, index: int) -> Batch:
        epoch = 0
        while True:
            if epoch == len(self.starts) - 1:  # extend the table by one epoch
                self.epoch, self.batches = epoch, self._epoch(epoch)
                self.starts.append(self.starts[-1] + len(self.batches))
            if index < self.starts[epoch + 1]:
                break
            epoch += 1
        if epoch != self.epoch:
            self.epoch, self.batches = epoch, self._epoch(epoch)
        return self.batches[index - self.starts[epoch]]


def tokenize_examples(
    tokenizer, examples: Sequence[Example], max_len: int, layout: PromptLayout = "chat"
) -> tuple[list[TokenizedExample], list[str]]:
    """Tokenize conversations; those longer than `max_len` are dropped with a warning."""
    kept, warnings = [], []
    for example in examples:
        try:
            tokenized = tokenize_conversation(tokenizer, example.messages, layout)
        except TemplateError as err:
            raise TemplateError(f"{example.origin}: {err}") from err
        if len(tokenized) > max_len:
            warnings.append(
                f"{example.origin}: {len(tokenized)} tokens, over max_seq_len={max_len}; dropped"
            )
        else:
            kept.append(tokenized)
    return kept, warnings


def train(
    model_dir: Path,
    dataset: Dataset,
    settings: TrainingSettings,
    output_dir: Path,
    *,
    name: str,
    base_model: str | None = None,
    domain: str | None = None,
    dtype: str = "float32",
    resume: bool = False,
    prompt_layout: str = "auto",
    progress: bool = False,
    on_step: Callable[[StepReport], None] | None = None,
    console: Console | None = None,
) -> TrainResult:
    """Train a LoRA adapter on `dataset` and write it, with its manifest, to `output_dir`.

    `model_dir` is a resolved base model folder (see `training.base_models`), `base_model`
    the name recorded in the manifest (default: the folder); `prompt_layout` is
    `model.prompt_layout` (`auto` decides from the base model). A fresh run refuses a
    non-empty `output_dir`; `resume=True` continues from its latest checkpoint.
    """
    model_dir, output_dir = Path(model_dir), Path(output_dir)
    s = settings
    latest = latest_checkpoint(output_dir)
    if resume and latest is None:
        raise TrainingError(f"{output_dir}: no checkpoint to resume from")
    if not resume and output_dir.exists() and any(output_dir.iterdir()):
        raise FileExistsError(
            f"{output_dir}: already holds an adapter or checkpoints; pass --resume to continue "
            "it, or choose another name/output folder"
        )
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=s.mixed_precision)
    world, rank = accelerator.num_processes, accelerator.process_index
    torch.manual_seed(s.seed)

    tokenizer = load_tokenizer(model_dir)
    layout = resolve_layout(prompt_layout, model_dir)
    train_set, warnings = tokenize_examples(tokenizer, dataset.train, s.max_seq_len, layout)
    val_set, val_warnings = tokenize_examples(
        tokenizer, dataset.validation, s.max_seq_len, layout
    )
    warnings = [*dataset.warnings, *warnings, *val_warnings]
    if not train_set:
        raise TrainingError(f"no training example fits in max_seq_len={s.max_seq_len} tokens")
    fingerprint = fingerprint_model(model_dir)
    run_key = _run_key(dataset, s, fingerprint, world, layout)
    if resume:
        _check_run_key(latest, run_key)

    model = add_lora(
        load_model(
            model_dir,
            dtype,
            s.quantization,
            s.gradient_checkpointing,
            accelerator.local_process_index,
        ),
        s.lora,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=s.learning_rate, weight_decay=s.weight_decay)
    loss_fn, optimizer = accelerator.prepare(TargetLoss(model), optimizer)
    stream = BatchStream(train_set, s, tokenizer.pad_token_id)
    val_batches = eval_batches(val_set, s.batch_size, tokenizer.pad_token_id)[rank::world]
    per_step = s.grad_accumulation * world
    total_steps = s.max_steps or max(1, math.ceil(s.epochs * stream.epoch_length() / per_step))
    scheduler = get_scheduler(
        _SCHEDULES[s.schedule], optimizer, min(s.warmup_steps, total_steps), total_steps
    )

    state, best = TrainState(), None
    if resume:
        state, best = _restore(latest, run_key, model, optimizer, scheduler)
    console = console or Console(stderr=True)
    progress = progress and accelerator.is_main_process
    for warning in warnings[:20] if progress else []:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)

    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  val {task.fields[val]}  {task.fields[tps]} tok/s"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, disable=not progress) as bar:
        task = bar.add_task(
            name, total=total_steps, completed=state.step, loss="-", val="-", tps="-"
        )
        while state.step < total_steps and not state.stopped_early:
            # One optimizer step over `grad_accumulation` micro-batches on each process.
            started = time.perf_counter()
            lr = scheduler.get_last_lr()[0]
            micro = [stream[state.cursor + i * world + rank] for i in range(s.grad_accumulation)]
            targets = sum(b.targets for b in micro)
            loss_fn.train()
            loss_sum = 0.0
            for i, batch in enumerate(micro):
                last = i == len(micro) - 1
                with nullcontext() if last else accelerator.no_sync(loss_fn):
                    loss = loss_fn(**_to(batch, accelerator.device))
                    accelerator.backward(loss / targets)
                loss_sum += loss.item()
            accelerator.clip_grad_norm_(params, s.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.cursor += per_step
            state.tokens += sum(b.tokens for b in micro) * world
            state.train_seconds += time.perf_counter() - started

            tps = state.tokens / max(state.train_seconds, 1e-9)
            report = StepReport(
                state.step,
                total_steps,
                loss_sum / targets,
                lr,
                tps,
                state.tokens,
                state.train_seconds,
            )
            if val_set and (state.step % s.eval_every == 0 or state.step == total_steps):
                report.val_loss = evaluate(loss_fn, val_batches, accelerator)
                if _record_eval(state, report.val_loss, s):
                    best = _adapter_weights(model)
            state.history.append(asdict(report))
            if state.step % s.save_every == 0 or state.step == total_steps or state.stopped_early:
                parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
                _save_checkpoint(output_dir, state, run_key, parts, best, s, accelerator)
            bar.update(
                task,
                completed=state.step,
                loss=f"{report.loss:.4f}",
                tps=f"{tps:,.0f}",
                val=f"{state.best_val_loss:.4f}" if state.best_val_loss is not None else "-",
            )
            if on_step is not None:
                on_step(report)

    if best is not None and state.best_step != state.step:
        set_peft_model_state_dict(model, best)  # keep the best evaluated weights
    metrics = _metrics(state, dataset, train_set, val_set, warnings, s)
    manifest = AdapterManifest(
        name=name,
        domain=domain,
        base_model=base_model or str(model_dir),
        base_fingerprint=fingerprint,
        prompt_format=prompt_format(layout),
        lora=lora_summary(model),
        data=dataset.files,
        metrics=metrics,
        lorag_version=lorag_version(),
    )
    if accelerator.is_main_process:
        _save_adapter(output_dir, model, manifest, state, accelerator)
    accelerator.wait_for_everyone()
    return TrainResult(output_dir, manifest, state, warnings)


def _record_eval(state: TrainState, val_loss: float, s: TrainingSettings) -> bool:
    """Track the best validation loss and early stopping; True when this one is the best."""
    if state.best_val_loss is None or val_loss < state.best_val_loss - s.early_stopping_min_delta:
        state.best_val_loss, state.best_step, state.bad_evals = val_loss, state.step, 0
        return True
    state.bad_evals += 1
    patience = s.early_stopping_patience
    state.stopped_early = patience is not None and state.bad_evals >= patience
    return False


def _to(batch: Batch, device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.model_inputs().items()}


@torch.no_grad()
def evaluate(loss_fn: torch.nn.Module, batches: Sequence[Batch], accelerator: Accelerator) -> float:
    """Mean loss per target token over the validation batches of all processes."""
    loss_fn.eval()
    total = torch.zeros(2, device=accelerator.device, dtype=torch.float64)
    for batch in batches:
        total[0] += loss_fn(**_to(batch, accelerator.device)).double()
        total[1] += batch.targets
    total = accelerator.reduce(total, reduction="sum")
    loss_fn.train()
    return float(total[0] / total[1].clamp(min=1))


def _metrics(
    state: TrainState,
    dataset: Dataset,
    train_set: Sequence[TokenizedExample],
    val_set: Sequence[TokenizedExample],
    warnings: Sequence[str],
    s: TrainingSettings,
) -> dict[str, Any]:
    recent = [row["loss"] for row in state.history[-10:]]
    evals = [row["val_loss"] for row in state.history if row["val_loss"] is not None]
    return {
        "steps": state.step,
        "train_loss": sum(recent) / len(recent) if recent else None,
        "first_train_loss": state.history[0]["loss"] if state.history else None,
        "val_loss": evals[-1] if evals else None,
        "best_val_loss": state.best_val_loss,
        "best_step": state.best_step,
        "stopped_early": state.stopped_early,
        "train_examples": len(train_set),
        "validation_examples": len(val_set),
        "duplicates_dropped": dataset.duplicates,
        "warnings": len(warnings),
        "tokens": state.tokens,
        "train_seconds": round(state.train_seconds, 3),
        "tokens_per_s": round(state.tokens / max(state.train_seconds, 1e-9), 1),
        "settings": s.model_dump(
            mode="json",
            include={
                "learning_rate",
                "schedule",
                "warmup_steps",
                "batch_size",
                "grad_accumulation",
                "max_seq_len",
                "packing",
                "seed",
                "max_steps",
                "epochs",
            },
        ),
    }


def _run_key(
    dataset: Dataset, s: TrainingSettings, fingerprint: str, world: int, layout: str
) -> str:
    """What a checkpoint must match to be resumed: data, batching, LoRA, base model, layout."""
    parts = {
        "train": [conversation_key(e.messages) for e in dataset.train],
        "validation": [conversation_key(e.messages) for e in dataset.validation],
        "settings": s.model_dump(
            mode="json",
            include={"lora", "batch_size", "grad_accumulation", "packing", "max_seq_len", "seed"},
        ),
        "base": fingerprint,
        "world": world,
        **({"layout": layout} if layout != "chat" else {}),  # chat: keys of older runs
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _adapter_weights(model: PeftModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint under `output_dir/checkpoints`, if any."""
    folder = Path(output_dir) / CHECKPOINTS
    done = sorted(p for p in folder.glob("step-*") if (p / "state.json").is_file())
    return done[-1] if done else None


def _save_checkpoint(
    output_dir: Path,
    state: TrainState,
    run_key: str,
    parts: dict[str, Any],
    best: dict[str, torch.Tensor] | None,
    s: TrainingSettings,
    accelerator: Accelerator,
) -> None:
    """Write `checkpoints/step-NNNNNN` atomically (a temporary folder, then a rename)."""
    if accelerator.is_main_process:
        folder = output_dir / CHECKPOINTS
        final = folder / f"step-{state.step:06d}"
        work = folder / f".tmp-step-{state.step:06d}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        accelerator.unwrap_model(parts["model"]).save_pretrained(work)
        tensors = {
            "optimizer": parts["optimizer"].state_dict(),
            "scheduler": parts["scheduler"].state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "best": best,
        }
        torch.save(tensors, work / "trainer.pt")
        (work / "state.json").write_text(
            json.dumps({"run_key": run_key, **asdict(state)}, indent=1) + "\n"
        )
        shutil.rmtree(final, ignore_errors=True)
        os.rename(work, final)
        for old in sorted(folder.glob("step-*"))[: -s.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _check_run_key(checkpoint: Path, run_key: str) -> None:
    if json.loads((checkpoint / "state.json").read_text()).get("run_key") != run_key:
        raise TrainingError(
            f"{checkpoint}: this checkpoint was trained on other data, batching, LoRA settings "
            "or base model; resume with the same ones, or start a new run"
        )


def _restore(
    checkpoint: Path, run_key: str, model: PeftModel, optimizer: Any, scheduler: Any
) -> tuple[TrainState, dict[str, torch.Tensor] | None]:
    _check_run_key(checkpoint, run_key)
    saved = json.loads((checkpoint / "state.json").read_text())
    saved.pop("run_key")
    set_peft_model_state_dict(model, load_peft_weights(str(checkpoint)))
    tensors = torch.load(checkpoint / "trainer.pt", weights_only=False)
    optimizer.load_state_dict(tensors["optimizer"])
    scheduler.load_state_dict(tensors["scheduler"])
    torch.set_rng_state(tensors["rng"])
    if tensors["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(tensors["cuda_rng"])
    return TrainState(**saved), tensors["best"]


def _save_adapter(
    output_dir: Path,
    model: PeftModel,
    manifest: AdapterManifest,
    state: TrainState,
    accelerator: Accelerator,
) -> None:
    """The adapter files, the training log, and last the manifest (which marks it complete)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / MANIFEST_FILE).unlink(missing_ok=True)
    accelerator.unwrap_model(model).save_pretrained(output_dir)
    with (output_dir / LOG_FILE).open("w") as log:
        for row in state.history:
            log.write(json.dumps(row) + "\n")
    manifest.save(output_dir)
