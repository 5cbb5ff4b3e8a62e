"""A setting with no effect is a defect: every key of the configuration reference and of
examples/demo.yaml must be read by the code that acts on it.

The check is static. A library is handed its section and reads its fields, so there a key
`a.b.leaf` reaches its code when a module of a package that acts on section `a` reads the
attribute `leaf` (outside the module that declares it). The shell (`lorag/`) holds both the
config and the demo's own settings, so there the read must name the parent too:
`<...>.b.leaf`, local aliases followed (`budget = plan.settings.eval; budget.max_tokens`).
For the demo file the demo itself must read what it drives: the `demo:` section, and the
`eval:` settings of the evals it runs (`lorag eval ...` reads them for the CLI, not for it).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from lorag.commands.config import reference_rows
from lorag.config import LoragConfig
from lorag.demo.settings import DemoSettings

ROOT = Path(__file__).resolve().parents[2]
DEMO_FILE = ROOT / "examples" / "demo.yaml"
# Where each section's settings are acted on, for a plain `lorag.yaml`.
READERS = {
    "model": ("training", "serving", "lorag"),
    "retrieval": ("retrieval", "training", "serving", "lorag"),
    "training": ("training", "lorag"),
    "serving": ("serving", "lorag"),
    "eval": ("eval", "lorag/commands"),
}
# ... and for the demo file, whose evals and requests the demo runs itself.
DEMO_READERS = {**READERS, "demo": ("lorag/demo",), "eval": ("lorag/demo",)}
# Read through a property of its settings class: the property's reads count.
VIA = {"serving.engine.kv_cache_gib": "serving.engine.kv_cache_bytes"}


def _chain(node: ast.AST, aliases: dict[str, str]) -> str:
    """`a.b.c` of an attribute read, a call written `f()`, a local alias replaced."""
    if isinstance(node, ast.Attribute):
        return f"{_chain(node.value, aliases)}.{node.attr}"
    if isinstance(node, ast.Call):
        return _chain(node.func, aliases) + "()"
    if isinstance(node, ast.Name):
        return aliases.get(node.id, node.id)
    return "?"


def _function_reads(function: ast.AST) -> set[str]:
    """The attribute chains a function reads, its plain aliases (`x = a.b`) followed."""
    aliases: dict[str, str] = {}
    reads = set()
    nodes = sorted(
        (n for n in ast.walk(function) if isinstance(n, ast.Assign | ast.Attribute)),
        key=lambda n: (n.lineno, n.col_offset),
    )
    for node in nodes:
        if isinstance(node, ast.Assign):
            simple = len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
            if simple and isinstance(node.value, ast.Attribute | ast.Name):
                aliases[node.targets[0].id] = _chain(node.value, aliases)
        elif isinstance(node.ctx, ast.Load):
            reads.add(_chain(node, aliases))
    return reads


@functools.cache
def _reads(folder: str) -> dict[str, set[str]]:
    """Module path -> the attribute chains its functions (and module body) read."""
    reads = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        tree = ast.parse(path.read_text())
        scopes = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        reads[str(path.relative_to(ROOT))] = set().union(
            _function_reads(tree), *(_function_reads(f) for f in scopes)
        )
    return reads


def _reaches(key: str, chains: set[str], shell: bool) -> bool:
    parts = key.split(".")
    if not shell:
        return any(chain.rsplit(".", 1)[-1] == parts[-1] for chain in chains)
    if parts[0] == "demo":
        parts[0] = "settings"  # the demo's settings travel as `settings` / `plan.settings`
    tail = "." + ".".join(parts[-2:])
    return any(f".{chain}".endswith(tail) for chain in chains)


def _declaring_module(key: str) -> str:
    """The module of the settings class that declares `key`'s last part."""
    model: type[BaseModel] = DemoSettings if key.startswith("demo.") else LoragConfig
    parts = key.split(".")[1:] if key.startswith("demo.") else key.split(".")
    for part in parts[:-1]:
        annotation = model.model_fields[part].annotation
        model = next(
            (a for a in (annotation, *getattr(annotation, "__args__", ())) if
             isinstance(a, type) and issubclass(a, BaseModel)),
            model,
        )  # fmt: skip
    return str(Path(model.__module__.replace(".", "/") + ".py"))


def _unread(keys: list[str], readers: dict[str, tuple[str, ...]]) -> list[str]:
    missing = []
    for key in keys:
        declared = _declaring_module(key)
        read_as = VIA.get(key, key)
        if not any(
            _reaches(read_as, chains, shell=folder.startswith("lorag"))
            for folder in readers[key.split(".", 1)[0]]
            for module, chains in _reads(folder).items()
            if module != declared
        ):
            missing.append(key)
    return missing


def _leaf_keys(mapping: dict, prefix: str = "") -> list[str]:
    keys = []
    for name, value in mapping.items():
        if isinstance(value, dict) and value:
            keys += _leaf_keys(value, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_every_reference_key_is_read_by_its_code() -> None:
    assert _unread([row[0] for row in reference_rows()], READERS) == []


def test_every_demo_file_key_is_read_by_the_demo_or_the_code_it_runs() -> None:
    keys = _leaf_keys(yaml.safe_load(DEMO_FILE.read_text()))
    assert keys, DEMO_FILE
    assert _unread(keys, DEMO_READERS) == []


@pytest.mark.parametrize(
    ("key", "readers"),
    [("eval.request_timeout_s", DEMO_READERS), ("demo.ask.questions", DEMO_READERS)],
)
def test_the_check_catches_a_setting_nobody_reads(key: str, readers: dict) -> None:
    blind = {**readers, key.split(".", 1)[0]: ("contracts",)}  # code that reads no settings
    assert _unread([key], blind) == [key]
