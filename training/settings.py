"""Settings of the training package, and of the base model that training and serving share."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Dtype = Literal["float32", "bfloat16", "auto"]


class ModelSettings(BaseModel):
    """The base model: `gemma-3-270m` (offline default), a local folder, or a cached HF id."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(
        "gemma-3-270m",
        description="`gemma-3-270m` (offline, from PyPI), a local folder, or a cached HF id",
    )
    cache_dir: Path = Field(
        Path("lorag-data/models"), description="where converted base models are kept"
    )
    dtype: Dtype = Field("float32", description="training/eval dtype (float32 on CPU)")
    prompt_layout: Literal["auto", "chat", "completion"] = Field(
        "auto",
        description=(
            "how prompts are laid out for the model, in training and serving alike: `chat` "
            "(the tokenizer's chat template, for instruction-tuned bases), `completion` "
            "(plain `Context: … Question: … Answer:` text, for pretrained bases), `auto` "
            "(completion for a pretrained base such as gemma-3-270m or one without a chat "
            "template, chat otherwise)"
        ),
    )


class LoraSettings(BaseModel):
    """PEFT LoRA hyper-parameters. vLLM must be started with `max_lora_rank >= r`."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, ge=1, le=256)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"


class RaftSettings(BaseModel):
    """How retrieval-aware samples are built from question/answer pairs and a domain's index."""

    model_config = ConfigDict(extra="forbid")

    distractors: int | None = Field(
        None,
        ge=0,
        le=50,
        description="distractor passages per sample; null: the server's k for the domain - 1",
    )
    search_k: int = Field(10, ge=1, le=200, description="hits searched to pick them from")
    distractor_only_fraction: float = Field(
        0.2, ge=0, le=1, description="share of samples whose context lacks the gold chunk"
    )
    order: Literal["retrieved", "shuffled"] = Field(
        "retrieved",
        description=(
            "retrieved: the server's top-k in rank order (the served prompt), the gold chunk "
            "put in at a random place when retrieval missed it; shuffled: gold + distractors "
            "from other documents in random order (RAFT's recipe)"
        ),
    )
    samples_per_pair: int = Field(
        1,
        ge=1,
        le=20,
        description=(
            "samples built per pair, each with its own random draws (in retrieved order the "
            "extra ones show the served passages reordered)"
        ),
    )
    cite: bool = Field(True, description="end answers with the gold passage's number, like [2]")
    cite_first: bool = Field(
        False, description="with cite: put the number before the answer ([2] 14 days), not after"
    )
    system_prompt: str | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _search_covers_distractors(self) -> RaftSettings:
        if self.distractors is not None and self.search_k < self.distractors:
            raise ValueError("search_k must be at least distractors")
        return self


class TrainingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    output_root: Path = Field(
        Path("lorag-data/adapters"), description="adapters are written to <output_root>/<name>"
    )
    lora: LoraSettings = LoraSettings()
    raft: RaftSettings = RaftSettings()

    # Data
    validation_fraction: float = Field(
        0.1, ge=0, lt=1, description="share of conversations held out for validation loss"
    )
    skip_invalid: bool = Field(False, description="drop invalid lines instead of refusing")
    max_seq_len: int = Field(
        2048,
        ge=16,
        description="tokens per sequence; longer conversations are dropped, with a warning",
    )
    packing: bool = Field(False, description="pack several conversations into one sequence")

    # Optimisation
    learning_rate: float = Field(2e-4, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["linear", "cosine", "constant"] = Field(
        "cosine", description="learning-rate decay after warm-up"
    )
    warmup_steps: int = Field(5, ge=0)
    batch_size: int = Field(4, ge=1, description="sequences per micro-batch (per device)")
    grad_accumulation: int = Field(1, ge=1, description="micro-batches per optimiser step")
    max_grad_norm: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="overrides epochs when set")
    epochs: float = Field(3.0, gt=0, description="passes over the training data")
    seed: int = 0

    # Evaluation, early stopping, checkpoints
    eval_every: int = Field(50, ge=1, description="steps between validation-loss evaluations")
    early_stopping_patience: int | None = Field(
        3, ge=1, description="evaluations without improvement before stopping; null = never"
    )
    early_stopping_min_delta: float = Field(
        0.0, ge=0, description="a smaller validation-loss decrease is no improvement"
    )
    save_every: int = Field(50, ge=1, description="steps between checkpoints (for --resume)")
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept on disk")

    # Accelerators (CUDA only; see docs/training.md)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    quantization: Literal["none", "4bit", "8bit"] = "none"
    gradient_checkpointing: bool = False
