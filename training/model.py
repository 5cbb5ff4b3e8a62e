"""Loading a base model for training, adding LoRA, and the loss that skips unneeded logits."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from training.base_models import torch_dtype
from training.batches import IGNORE_INDEX
from training.settings import LoraSettings

# Config keys of models whose logits are rescaled after the output layer in ways the
# selective loss below does not reproduce: those models fall back to full logits.
_LOGIT_SCALE_KEYS = ("logit_scale", "logits_scaling", "output_multiplier_scale")


def load_tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    model_dir: Path,
    dtype: str = "float32",
    quantization: str = "none",
    gradient_checkpointing: bool = False,
    device_index: int = 0,
) -> nn.Module:
    """The base causal LM, frozen. `quantization` `4bit`/`8bit` is QLoRA (CUDA + bitsandbytes).

    QLoRA path: the base weights load quantised with bitsandbytes onto this process's GPU
    (`device_index`, the local rank under `accelerate launch`), compute in bfloat16, and
    `prepare_model_for_kbit_training` casts norms to float32 and enables input gradients.
    """
    kwargs: dict = {"dtype": torch_dtype(dtype)}
    if quantization != "none":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"quantization={quantization!r} (QLoRA) needs a CUDA GPU and bitsandbytes; "
                "set training.quantization to 'none' on a CPU"
            )
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=quantization == "4bit",
            load_in_8bit=quantization == "8bit",
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["device_map"] = {"": device_index}
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    if quantization != "none":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing
        )
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    return model


def lora_config(settings: LoraSettings) -> LoraConfig:
    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )


def add_lora(model: nn.Module, settings: LoraSettings) -> PeftModel:
    """Wrap the base model with fresh LoRA adapters (initialised from torch's RNG)."""
    return get_peft_model(model, lora_config(settings))


class TargetLoss(nn.Module):
    """Summed next-token cross-entropy over the labelled positions of a batch.

    The backbone runs to hidden states, and the output layer only at positions whose next
    token has a label: with Gemma's 262k-entry vocabulary the output layer is most of the
    compute, and an assistant answer is a small share of a retrieval-augmented sample.
    The module holds the PEFT model so that `accelerate` (DDP/FSDP) can wrap this forward.
    """

    def __init__(self, model: PeftModel) -> None:
        super().__init__()
        self.model = model
        config = model.get_base_model().config
        rescaled = any(
            getattr(config, key, None) not in (None, 1, 1.0) for key in _LOGIT_SCALE_KEYS
        )
        self.selective = not rescaled and hasattr(model.get_base_model(), "get_decoder")
        self.softcap = getattr(config, "final_logit_softcapping", None)

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        causal_lm = self.model.get_base_model()
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        inputs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "use_cache": False,
        }
        if self.selective:
            hidden = causal_lm.get_decoder()(**inputs).last_hidden_state
            logits = causal_lm.get_output_embeddings()(hidden[:, :-1][keep])
            if self.softcap:
                logits = torch.tanh(logits / self.softcap) * self.softcap
        else:
            logits = causal_lm(**inputs).logits[:, :-1][keep]
        return F.cross_entropy(logits.float(), targets[keep], reduction="sum")
