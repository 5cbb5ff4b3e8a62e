"""The README's examples must work with the code as it is."""

import re
from pathlib import Path

import pytest
import typer
from typer.main import get_command

from lorag.cli import app
from lorag.config import load_config

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_readme_config_example_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", README, flags=re.DOTALL)
    assert blocks, "the README has no YAML example"
    for number, block in enumerate(blocks):
        path = tmp_path / f"example-{number}.yaml"
        path.write_text(block)
        load_config(path)  # raises ConfigError naming the bad key


def test_readme_commands_exist() -> None:
    root = get_command(app)
    assert isinstance(root, typer.core.TyperGroup)
    listed = set(re.findall(r"^\| `lorag ([a-z]+)(?: ([a-z]+))?", README, flags=re.MULTILINE))
    assert listed
    for command, sub in listed:
        assert command in root.commands, (
            f"README lists `lorag {command}`, the CLI has no such command"
        )
        group = root.commands[command]
        if sub and hasattr(group, "commands"):
            assert sub in group.commands, f"README lists `lorag {command} {sub}`"
