"""`lorag train` and `lorag export --merge`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from lorag.commands.common import config_of, console, resolve_base

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


def register(app: typer.Typer) -> None:
    """Add `lorag train` and `lorag export` to the root app."""
    app.command("train")(train_command)
    app.command("export")(export_command)


def train_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", "-n", help="Adapter name (also its folder name).")],
    data: Annotated[
        list[Path] | None,
        typer.Option("--data", help="Chat, prompt/completion or alpaca JSONL (repeatable)."),
    ] = None,
    qa: Annotated[
        list[Path] | None,
        typer.Option(
            "--qa", help="Question/answer JSONL for retrieval-aware samples (needs --domain)."
        ),
    ] = None,
    domain: Annotated[
        str | None, typer.Option("--domain", help="Domain: its index supplies --qa contexts.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="[default: training.output_root/NAME]")
    ] = None,
    base_model: Annotated[
        str | None, typer.Option("--base-model", help="[default: model.base_model]")
    ] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps")] = None,
    epochs: Annotated[float | None, typer.Option("--epochs")] = None,
    learning_rate: Annotated[float | None, typer.Option("--lr")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    grad_accumulation: Annotated[int | None, typer.Option("--grad-accumulation")] = None,
    lora_r: Annotated[int | None, typer.Option("--lora-r")] = None,
    max_seq_len: Annotated[int | None, typer.Option("--max-seq-len")] = None,
    packing: Annotated[bool | None, typer.Option("--packing/--no-packing")] = None,
    eval_every: Annotated[int | None, typer.Option("--eval-every")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the output folder's last checkpoint.")
    ] = False,
) -> None:
    """Fine-tune a LoRA adapter on domain data (settings: the `training:` config section)."""
    import re

    from pydantic import ValidationError
    from transformers.utils import logging as hf_logging

    from training.data import build_dataset, load_data_file
    from training.raft import write_samples
    from training.settings import TrainingSettings
    from training.trainer import train

    if not re.match(NAME_PATTERN, name):
        raise typer.BadParameter("use letters, digits, '.', '_' and '-'", param_hint="--name")
    if not data and not qa:
        raise typer.BadParameter("give training data with --data and/or --qa", param_hint="--data")
    if qa and not domain:
        raise typer.BadParameter(
            "--qa needs --domain (the index to retrieve from)", param_hint="--domain"
        )
    config = config_of(ctx)
    updates = {
        "max_steps": max_steps, "epochs": epochs, "learning_rate": learning_rate,
        "batch_size": batch_size, "grad_accumulation": grad_accumulation,
        "max_seq_len": max_seq_len, "packing": packing, "eval_every": eval_every, "seed": seed,
    }  # fmt: skip
    values = config.training.model_dump()
    values.update({k: v for k, v in updates.items() if v is not None})
    if lora_r is not None:
        values["lora"]["r"] = lora_r
    try:
        settings = TrainingSettings.model_validate(values)
    except ValidationError as err:
        raise ValueError(f"invalid training options: {err}") from err
    hf_logging.disable_progress_bar()

    base_name, base_dir = resolve_base(config.model, base_model)
    sources, warnings = [], []
    for path in data or []:
        examples, info, errors = load_data_file(path, settings.skip_invalid)
        sources.append((examples, info))
        warnings += [f"skipped {e}" for e in errors]
    raft_examples = []
    if qa:
        for path, examples, info, stats in _raft(config, settings, qa, domain):
            sources.append((examples, info))
            raft_examples += examples
            warnings += stats.warnings
            console.print(
                f"{path}: {stats.pairs} QA pairs -> samples (gold by id {stats.gold_from_ids}, "
                f"by answer {stats.gold_by_answer}, top hit assumed "
                f"{stats.gold_assumed_top_hit}, distractors only {stats.distractor_only})"
            )
    dataset = build_dataset(sources, settings.validation_fraction, warnings)
    output_dir = output or settings.output_root / name
    console.print(
        f"Training [bold]{name}[/] on {base_name}: {len(dataset.train)} train / "
        f"{len(dataset.validation)} validation conversations "
        f"({dataset.duplicates} duplicates dropped) -> {output_dir}"
    )
    result = train(
        base_dir, dataset, settings, output_dir, name=name, base_model=base_name,
        domain=domain, dtype=config.model.dtype, resume=resume,
        prompt_layout=config.model.prompt_layout, progress=True,
        console=console,
    )  # fmt: skip
    if raft_examples:
        write_samples(raft_examples, output_dir)
    _print_summary(result)


def _raft(config: Any, settings: Any, paths: list[Path], domain: str) -> list[tuple]:
    """`(path, examples, data file, stats)` per QA file, retrieved as the server would."""
    from retrieval import Retriever
    from training.raft import samples_from_qa_file

    raft, k, mode = config.served_raft(domain, settings.raft)
    results = []
    with Retriever(config.retrieval) as retriever:
        for path in paths:
            with console.status(f"Retrieving contexts for {path} from {domain!r}"):
                examples, info, stats = samples_from_qa_file(
                    path, retriever, domain, raft, k, mode, settings.skip_invalid
                )
            results.append((path, examples, info, stats))
    return results


def _print_summary(result: Any) -> None:
    m = result.manifest.metrics

    def fmt(value: Any) -> str:
        return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

    table = Table(title=f"adapter {result.manifest.name}", show_header=False)
    table.add_row("steps", fmt(m["steps"]) + (" (early stop)" if m["stopped_early"] else ""))
    table.add_row(
        "train loss (first -> last)", f"{fmt(m['first_train_loss'])} -> {fmt(m['train_loss'])}"
    )
    table.add_row(
        "validation loss (best @ step)", f"{fmt(m['best_val_loss'])} @ {fmt(m['best_step'])}"
    )
    table.add_row("tokens/s", fmt(m["tokens_per_s"]))
    table.add_row(
        "examples (train / validation)", f"{m['train_examples']} / {m['validation_examples']}"
    )
    table.add_row("adapter", str(result.adapter_dir))
    console.print(table)
    if result.warnings:
        console.print(f"[yellow]{len(result.warnings)} warning(s)[/], first: {result.warnings[0]}")


def export_command(
    ctx: typer.Context,
    adapter_dir: Annotated[Path, typer.Argument(help="Adapter folder (from `lorag train`).")],
    out_dir: Annotated[Path, typer.Argument(help="Folder for the merged model (must not exist).")],
    merge: Annotated[
        bool, typer.Option("--merge", help="Merge the adapter into the base model's weights.")
    ] = False,
    base_model: Annotated[
        str | None,
        typer.Option(
            "--base-model", help="[default: the base model named in the adapter manifest]"
        ),
    ] = None,
) -> None:
    """Export an adapter: `--merge` writes base + adapter as one standalone model folder."""
    from contracts.manifest import AdapterManifest
    from training.adapters import merge_adapter

    if not merge:
        raise typer.BadParameter(
            "only merged export is supported: pass --merge", param_hint="--merge"
        )
    manifest = AdapterManifest.load(adapter_dir)
    model_settings = config_of(ctx).model
    _, base_dir = resolve_base(model_settings, base_model or manifest.base_model)
    with console.status(f"Merging {manifest.name} into {manifest.base_model}"):
        merge_adapter(adapter_dir, base_dir, out_dir, model_settings.dtype)
    console.print(f"Merged model written to [bold]{out_dir}[/]")
