"""Eval set loading: valid files load, every bad line is named with file:line and field."""

from pathlib import Path

import pytest

from eval.dataset import EvalSetError, load_eval_set


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_valid_set_loads(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '{"question": "How long?", "answer": "30 days", "aliases": ["thirty days"], '
        '"gold_doc": "./guides/refunds.md"}',
        "",
        '{"id": 7, "question": "Who?", "answer": "Ann", "gold_docs": ["a.md", "b/c.md"]}',
        '{"question": "No gold?", "answer": "fine"}',
    )
    items = load_eval_set(path)
    assert [i.id for i in items] == ["line-1", "7", "line-4"]
    assert items[0].gold_docs == ("guides/refunds.md",)
    assert items[0].references == ["30 days", "thirty days"]
    assert items[1].gold_docs == ("a.md", "b/c.md")
    assert items[1].line == 3
    assert items[2].gold_docs == ()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"answer": "x"}', r"set\.jsonl:2: question: required field is missing"),
        ('{"question": "  ", "answer": "x"}', r"set\.jsonl:2: question: must not be empty"),
        ('{"question": "q", "answer": 3}', r"set\.jsonl:2: answer: Input should be a valid string"),
        ('{"question": "q", "answer": "a", "gold": "x.md"}', r"set\.jsonl:2: gold: unknown field"),
        ('{"question": "q", "answer": "a", "aliases": "b"}', r"set\.jsonl:2: aliases: "),
        ('{"question": "q", "answer": "a", "gold_doc": "/etc/x"}', r"set\.jsonl:2: gold_doc: "),
        ('{"question": "q", "answer": "a", "gold_doc": "a", "gold_docs": ["b"]}',
         r"set\.jsonl:2: gold_doc, gold_docs: give one or the other"),
        ('{"question": "q", "answer": "a", "gold_docs": []}',
         r"set\.jsonl:2: gold_docs: must list"),
        ('{"question": "q", "answer": "a",}', r"set\.jsonl:2: invalid JSON: .*\(column \d+\)"),
        ('["q", "a"]', r"set\.jsonl:2: expected a JSON object, got list"),
    ],
)
def test_bad_lines_are_named(tmp_path: Path, line: str, expected: str) -> None:
    path = write(tmp_path, '{"question": "ok", "answer": "ok"}', line)
    with pytest.raises(EvalSetError, match=expected):
        load_eval_set(path)


def test_every_bad_line_is_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '{"question": "q"}',
        '{"question": "ok", "answer": "ok", "id": "x"}',
        "not json",
        '{"question": "q2", "answer": "a", "id": "x"}',
    )
    with pytest.raises(EvalSetError) as err:
        load_eval_set(path)
    message = str(err.value)
    assert "3 invalid line(s)" in message
    assert "set.jsonl:1: answer: required field is missing" in message
    assert "set.jsonl:3: invalid JSON" in message
    assert "set.jsonl:4: id: 'x' already used on line 2" in message


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="eval set not found"):
        load_eval_set(tmp_path / "nope.jsonl")
    with pytest.raises(EvalSetError, match="has no questions"):
        load_eval_set(write(tmp_path, "", "  "))
