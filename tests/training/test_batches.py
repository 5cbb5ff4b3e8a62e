"""Assistant-only labels, packing and the selective output-layer loss on tiny models."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model

from tests.support.tiny_models import build_tiny_model
from training.batches import (
    IGNORE_INDEX,
    TemplateError,
    collate,
    epoch_batches,
    has_generation_markers,
    pack,
    tokenize_conversation,
)
from training.chat_template import DEFAULT_CHAT_TEMPLATE
from training.model import TargetLoss, load_model, load_tokenizer, lora_config
from training.settings import LoraSettings

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the refund window?"},
    {"role": "assistant", "content": "Fourteen days."},
    {"role": "user", "content": "And the warranty?"},
    {"role": "assistant", "content": "Two years."},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return load_tokenizer(tiny_model)


def _labelled_spans(example) -> list[list[int]]:
    spans, current = [], []
    for label in example.labels:
        if label == IGNORE_INDEX:
            if current:
                spans.append(current)
            current = []
        else:
            current.append(label)
    return spans + ([current] if current else [])


def test_labels_cover_exactly_the_assistant_turns(tokenizer):
    example = tokenize_conversation(tokenizer, CONVERSATION)
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    expected = [
        tokenizer.encode("Fourteen days.", add_special_tokens=False) + [end_of_turn],
        tokenizer.encode("Two years.", add_special_tokens=False) + [end_of_turn],
    ]
    assert _labelled_spans(example) == expected
    # Everything else (bos, system, user turns, turn headers) carries no loss.
    labelled = sum(len(span) for span in expected)
    assert sum(label != IGNORE_INDEX for label in example.labels) == labelled
    assert example.input_ids[0] == tokenizer.bos_token_id
    kept = [t for t, label in zip(example.input_ids, example.labels) if label != IGNORE_INDEX]
    assert kept == [label for label in example.labels if label != IGNORE_INDEX]


def test_templates_without_generation_markers_are_masked_by_prefixes(tokenizer):
    marked = tokenize_conversation(tokenizer, CONVERSATION)
    tokenizer = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE.replace("{%- generation -%}", "").replace(
        "{%- endgeneration -%}", ""
    )
    assert not has_generation_markers(tokenizer.chat_template)
    by_prefix = tokenize_conversation(tokenizer, CONVERSATION)
    assert by_prefix.input_ids == marked.input_ids
    # The prefix method also labels the "\n" the template writes after <end_of_turn>.
    spans = _labelled_spans(by_prefix)
    assert [s[: len(m)] for s, m in zip(spans, _labelled_spans(marked))] == _labelled_spans(marked)
    tokenizer.chat_template = None
    with pytest.raises(TemplateError, match="no chat template"):
        tokenize_conversation(tokenizer, CONVERSATION)


def test_pack_fills_rows_in_order_without_splitting_examples(tokenizer):
    examples = [tokenize_conversation(tokenizer, CONVERSATION[1:3])] * 5
    size = len(examples[0])
    rows = pack(examples, max_len=2 * size + 1)
    assert [len(row) for row in rows] == [2, 2, 1]
    batch = collate(rows, tokenizer.pad_token_id)
    assert batch.attention_mask is None and batch.position_ids is not None
    assert batch.position_ids[0].tolist()[: 2 * size] == list(range(size)) * 2
    assert batch.tokens == 5 * size
    assert batch.targets == 5 * sum(label != IGNORE_INDEX for label in examples[0].labels)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_selective_loss_equals_full_logits_loss_and_packing_changes_nothing(arch, tmp_path_factory):
    model_dir = build_tiny_model(tmp_path_factory.mktemp(arch) / arch, arch=arch)
    tokenizer = load_tokenizer(model_dir)
    torch.manual_seed(0)
    model = get_peft_model(load_model(model_dir), lora_config(LoraSettings(r=4, dropout=0.0)))
    loss_fn = TargetLoss(model).eval()
    assert loss_fn.selective
    conversations = [CONVERSATION, CONVERSATION[1:3], CONVERSATION[:3], CONVERSATION[3:]]
    examples = [tokenize_conversation(tokenizer, c) for c in conversations]
    padded = epoch_batches(examples, 4, tokenizer.pad_token_id, seed=0, epoch=0)
    packed = epoch_batches(examples, 4, tokenizer.pad_token_id, 0, 0, packing=True, max_len=512)
    assert len(padded) == len(packed) == 1 and packed[0].input_ids.shape[0] == 1
    with torch.no_grad():
        full = model(**padded[0].model_inputs()).loss * padded[0].targets
        selective = loss_fn(**padded[0].model_inputs())
        packed_loss = loss_fn(**packed[0].model_inputs())
    assert padded[0].targets == packed[0].targets
    torch.testing.assert_close(selective, full, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(packed_loss, selective, rtol=1e-5, atol=1e-4)
