"""The one prompt module: both layouts, the few-shot baseline, and the layout decision."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from retrieval.prompt import (
    ANSWER_CUE,
    BASE_MODEL_FILE,
    PromptLayoutError,
    build_messages,
    check_one_line_answers,
    completion_ids,
    completion_segments,
    prompt_format,
    render_few_shot,
    resolve_layout,
)
from tests.support.tiny_models import build_tokenizer


@dataclass
class P:
    source: str
    heading: str
    text: str


PASSAGES = [
    P("setup/power.md", "PoE", "The R7 draws 120 W over PoE++."),
    P("faq.md", "", "Red LED: fault."),
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


def test_completion_layout_is_plain_text_ending_in_the_answer_cue():
    messages = build_messages(
        [{"role": "user", "content": "How much power?"}], PASSAGES, "Be brief."
    )
    ((text, is_answer),) = completion_segments(messages)
    assert not is_answer
    assert text.startswith("Be brief.\n\nAnswer the question using the context below.")
    assert (
        "Context:\n[1] setup/power.md > PoE\nThe R7 draws 120 W over PoE++.\n\n[2] faq.md\n" in text
    )
    assert text.endswith("\n\nQuestion: How much power?" + ANSWER_CUE)
    assert "<start_of_turn>" not in text


def test_earlier_turns_come_first_and_answers_are_their_own_pieces():
    messages = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "a2"},
    ]
    assert completion_segments(messages) == [
        ("q1\nAnswer:", False),
        (" a1\n", True),
        ("\nq2\nAnswer:", False),
        (" a2\n", True),
    ]
    with pytest.raises(PromptLayoutError, match="must follow a user turn"):
        completion_segments([{"role": "assistant", "content": "a"}])


def test_served_prompt_is_the_training_sample_prefix_token_for_token(tokenizer):
    prompt = build_messages([{"role": "user", "content": "How much power?"}], PASSAGES)
    sample = [*prompt, {"role": "assistant", "content": "120 W [1]"}]
    served, served_mask = completion_ids(tokenizer, prompt)
    trained, mask = completion_ids(tokenizer, sample)
    assert trained[: len(served)] == served and not any(served_mask)
    assert served[0] == tokenizer.bos_token_id and trained.count(tokenizer.bos_token_id) == 1
    answer = [t for t, a in zip(trained, mask) if a]
    assert tokenizer.decode(answer) == " 120 W [1]\n"
    assert mask == [False] * len(served) + [True] * len(answer)


def test_multi_line_answers_are_refused_with_the_reason():
    with pytest.raises(PromptLayoutError, match="first newline.*prompt_layout: chat"):
        check_one_line_answers(
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a\nb"}]
        )
    check_one_line_answers(
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": " a \n"}]
    )


def test_few_shot_prompt_holds_each_shot_with_its_context_then_the_question():
    text = render_few_shot([("Shot q?", PASSAGES[:1], "120  W")], "Real q?", PASSAGES[1:])
    blocks = text.split("\n\n")
    assert blocks[0].startswith("Answer each question")
    assert (
        "Context:\n[1] setup/power.md > PoE\nThe R7 draws 120 W over PoE++.\n\nQuestion: Shot q?\nAnswer: 120 W"
        in text
    )
    assert text.endswith("Context:\n[1] faq.md\nRed LED: fault.\n\nQuestion: Real q?\nAnswer:")
    assert text.count("Question:") == 2


def test_layout_auto_follows_the_model_folder(tmp_path):
    assert resolve_layout("completion", tmp_path) == "completion"
    assert resolve_layout("auto", tmp_path) == "completion"  # no chat template at all
    with pytest.raises(ValueError, match="no chat template"):
        resolve_layout("chat", tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{x}}"}))
    assert resolve_layout("auto", tmp_path) == "chat"
    assert resolve_layout("chat", tmp_path) == "chat"
    (tmp_path / BASE_MODEL_FILE).write_text(json.dumps({"pretrained": True}))
    assert resolve_layout("auto", tmp_path) == "completion"
    with pytest.raises(ValueError, match="choose auto, chat or completion"):
        resolve_layout("freeform", tmp_path)
    assert prompt_format("chat") != prompt_format("completion")
