"""Training data: formats, line-by-line validation, duplicates, the deterministic split."""

from __future__ import annotations

import json
import random

import pytest

from tests.training.conftest import chat_records, write_jsonl
from training.data import DataError, load_data_file, load_dataset

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def test_the_three_formats_become_conversations(tmp_path):
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            GOOD,
            {"prompt": "Capital of France?", "completion": "Paris.", "id": 7},
            {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
            {"instruction": "Say yes.", "output": "Yes."},
            "",
        ],
    )
    examples, info, errors = load_data_file(path)
    assert errors == []
    assert info.records == 4 and len(info.sha256) == 64
    assert [e.messages for e in examples] == [
        GOOD["messages"],
        [{"role": "user", "content": "Capital of France?"},
         {"role": "assistant", "content": "Paris."}],
        [{"role": "user", "content": "Translate to French.\n\ncat"},
         {"role": "assistant", "content": "chat"}],
        [{"role": "user", "content": "Say yes."}, {"role": "assistant", "content": "Yes."}],
    ]  # fmt: skip
    assert [e.origin for e in examples] == [f"{path}:{n}" for n in (1, 2, 3, 4)]


BAD_LINES = [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ({"prompt": "only a prompt"}, "completion: Field required"),
    ({"prompt": "  ", "completion": "x"}, "prompt: String should have at least 1 character"),
    ({"instruction": "do it", "output": 3}, "output: Input should be a valid string"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "messages.0.role: Input should be"),
    ({"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "a"}]},
     "messages.0.content: String should have at least 1 character"),
    ({"messages": [{"role": "user", "content": "q"}]}, "must end with an assistant message"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"},
                   {"role": "assistant", "content": "a"}]}, "system message may only come first"),
    ({"messages": [{"role": "assistant", "content": "a"}]}, "needs at least one user message"),
    ({"messages": "hello"}, "messages: Input should be a valid list"),
    ({"text": "free text"}, "unknown record format"),
    ({"question": "q", "answer": "a"}, "pass QA files with --qa and --domain"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "expected"), BAD_LINES)
def test_each_bad_line_is_refused_naming_file_line_and_field(tmp_path, line, expected):
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD, GOOD, line])
    with pytest.raises(DataError) as err:
        load_data_file(path)
    assert f"{path}:3: " in str(err.value)
    assert expected in str(err.value)


def test_invalid_lines_can_be_skipped_but_not_all(tmp_path):
    path = write_jsonl(tmp_path / "some.jsonl", [GOOD, {"prompt": "p"}, "{oops"])
    examples, info, errors = load_data_file(path, skip_invalid=True)
    assert len(examples) == 1 and info.records == 1
    assert errors[0].startswith(f"{path}:2: completion") and errors[1].startswith(f"{path}:3:")
    bad = write_jsonl(tmp_path / "all-bad.jsonl", [{"prompt": "p"}, "{oops"])
    with pytest.raises(DataError, match="no valid records"):
        load_data_file(bad, skip_invalid=True)


def test_empty_and_missing_files_are_refused(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="empty"):
        load_dataset([empty])
    with pytest.raises(DataError, match="not found"):
        load_dataset([tmp_path / "missing.jsonl"])
    with pytest.raises(DataError, match="no training data"):
        load_dataset([])


def test_duplicates_are_dropped_across_files(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [GOOD, GOOD, {"prompt": "hi", "completion": "hello"}])
    b = write_jsonl(tmp_path / "b.jsonl", [GOOD])
    dataset = load_dataset([a, b], validation_fraction=0.0)
    # The prompt/completion line is the same conversation as GOOD.
    assert len(dataset.train) == 1 and dataset.validation == []
    assert dataset.duplicates == 3
    assert [f.records for f in dataset.files] == [3, 1]


def test_split_is_deterministic_and_independent_of_order(tmp_path):
    records = chat_records(60)
    shuffled = records[:]
    random.Random(1).shuffle(shuffled)
    one = load_dataset([write_jsonl(tmp_path / "one.jsonl", records)], validation_fraction=0.2)
    two = load_dataset([write_jsonl(tmp_path / "two.jsonl", shuffled)], validation_fraction=0.2)

    def keys(examples):
        return sorted(json.dumps(e.messages) for e in examples)

    assert keys(one.validation) == keys(two.validation)
    assert keys(one.train) == keys(two.train)
    assert 4 <= len(one.validation) <= 20 and len(one.train) + len(one.validation) == 60
    # Adding data keeps every conversation on its side.
    more = load_dataset(
        [write_jsonl(tmp_path / "more.jsonl", chat_records(90))], validation_fraction=0.2
    )
    assert set(keys(one.validation)) <= set(keys(more.validation))


def test_a_small_set_still_gets_one_validation_example(tmp_path):
    path = write_jsonl(tmp_path / "two.jsonl", chat_records(2))
    dataset = load_dataset([path], validation_fraction=0.1)
    assert len(dataset.train) == 1 and len(dataset.validation) == 1
