"""A demo file, read and checked, its domain folders, and the effective lorag config the
server starts with (written to `<data_dir>/lorag.yaml`)."""

from __future__ import annotations

import json
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lorag.config import LoragConfig, load_config
from lorag.demo.settings import DemoError, DemoSettings
from serving.process import free_port

DEMO_FILE = Path("examples") / "demo.yaml"
MARKER_FILE = "lorag-demo.json"  # marks a data folder as the demo's own (safe to recreate)
CONFIG_FILE = "lorag.yaml"  # the effective lorag config the demo writes for the server


@dataclass(frozen=True)
class ExampleDomain:
    """A domain folder: `domain.yaml`, `docs/`, `qa/train.jsonl`, `qa/heldout.jsonl`."""

    name: str
    folder: Path
    description: str
    system_prompt: str | None

    @property
    def docs(self) -> Path:
        return self.folder / "docs"

    @property
    def train_qa(self) -> Path:
        return self.folder / "qa" / "train.jsonl"

    @property
    def heldout_qa(self) -> Path:
        return self.folder / "qa" / "heldout.jsonl"


def _read_mapping(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise DemoError(f"{path}: invalid YAML: {err}") from err


def load_domain(folder: Path) -> ExampleDomain:
    """Read a domain folder, with an error naming what is missing."""
    folder = Path(folder)
    spec_file = folder / "domain.yaml"
    if not spec_file.is_file():
        raise DemoError(f"{spec_file}: not found; a demo domain folder needs a domain.yaml")
    spec = _read_mapping(spec_file)
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise DemoError(f"{spec_file}: needs a `name:` (the domain name)")
    domain = ExampleDomain(
        name=spec["name"],
        folder=folder,
        description=str(spec.get("description") or ""),
        system_prompt=spec.get("system_prompt") or None,
    )
    for needed in (domain.docs, domain.train_qa, domain.heldout_qa):
        if not needed.exists():
            raise DemoError(f"{needed}: not found (domain {domain.name!r} in {folder})")
    return domain


@dataclass
class ServerKeys:
    """Fresh API keys for one demo run: the server is never left open."""

    chat: str = field(default_factory=lambda: "demo-chat-" + secrets.token_urlsafe(16))
    admin: str = field(default_factory=lambda: "demo-admin-" + secrets.token_urlsafe(16))


@dataclass
class DemoPlan:
    """A demo file, read and checked, and the effective lorag config written for the server."""

    demo_file: Path
    settings: DemoSettings
    domains: list[ExampleDomain]
    config: LoragConfig
    config_file: Path
    keys: ServerKeys
    port: int

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def replace_domain(self) -> ExampleDomain:
        name = self.settings.replace.domain or self.domains[0].name
        return next(d for d in self.domains if d.name == name)


def default_demo_file() -> Path:
    """`./examples/demo.yaml`, else the one of the checkout this package runs from."""
    if DEMO_FILE.is_file():
        return DEMO_FILE
    return Path(__file__).resolve().parents[2] / DEMO_FILE


def _describe(err: ValidationError, origin: str) -> str:
    lines = [f"{origin}: invalid demo settings"]
    for item in err.errors():
        where = ".".join(str(part) for part in ("demo", *item["loc"]))
        problem = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        lines.append(f"  {where}: {problem}")
    return "\n".join(lines)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _forced(
    settings: DemoSettings,
    domains: list[ExampleDomain],
    keys: ServerKeys,
    port: int,
    serving: dict[str, Any],
) -> dict[str, Any]:
    """What the demo decides in the config: its model, where it writes, and the server's
    domains, adapters, API keys and port."""
    root = settings.data_dir
    return {
        "model": {
            "base_model": settings.base_model,
            "cache_dir": str(settings.model_cache_dir),
            "dtype": settings.dtype,
        },
        "retrieval": {"qdrant": {"path": str(root / "qdrant")}},
        "training": {"output_root": str(root / "adapters")},
        "serving": {
            "host": "127.0.0.1",
            "port": port,
            "adapters_root": str(root / "adapters"),
            "data_dir": str(root / "serving"),
            "state_store": "file",
            "api_keys": [
                {"key": keys.chat, "scopes": ["chat"], "name": "demo"},
                {"key": keys.admin, "scopes": ["admin"], "name": "demo-admin"},
            ],
            "domains": {
                d.name: {
                    **(serving.get("domains") or {}).get(d.name, {}),
                    "adapter": d.name,
                    "index": True,
                    "system_prompt": d.system_prompt,
                }
                for d in domains
            },
            "adapters": {d.name: f"{d.name}/v1" for d in domains},
        },
        "eval": {"report_dir": str(root / "reports")},
    }


def prepare(demo_file: Path, data_dir: Path | None = None) -> DemoPlan:
    """Read `demo_file`, recreate the data folder and write the effective lorag config.

    The lorag sections of the file are used as they are, except what `_forced` decides.
    """
    demo_file = Path(demo_file)
    if not demo_file.is_file():
        raise DemoError(f"{demo_file}: demo file not found (see examples/demo.yaml)")
    raw = _read_mapping(demo_file)
    if not isinstance(raw, dict):
        raise DemoError(f"{demo_file}: the top level must be a mapping of sections")
    sections = dict(raw)
    try:
        settings = DemoSettings.model_validate(sections.pop("demo", None) or {})
    except ValidationError as err:
        raise DemoError(_describe(err, str(demo_file))) from err
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": Path(data_dir)})
    domains = [load_domain(demo_file.parent / folder) for folder in settings.domains]
    names = [d.name for d in domains]
    if settings.replace.domain is not None and settings.replace.domain not in names:
        raise DemoError(
            f"{demo_file}: demo.replace.domain {settings.replace.domain!r} is not one of the "
            f"demo's domains ({', '.join(names)})"
        )

    _recreate(settings.data_dir)
    keys = ServerKeys()
    port = settings.port or free_port()
    forced = _forced(settings, domains, keys, port, sections.get("serving") or {})
    config_file = settings.data_dir / CONFIG_FILE
    config_file.write_text(
        f"# Written by `lorag demo` from {demo_file}; the server reads it.\n"
        + yaml.safe_dump(_merge(sections, forced), sort_keys=False)
    )
    try:
        config = load_config(config_file)
    except ValueError as err:
        raise DemoError(f"{demo_file}: {err}") from err
    return DemoPlan(demo_file, settings, domains, config, config_file, keys, port)


def _recreate(root: Path) -> None:
    """Empty the demo's data folder; refuse a non-empty folder the demo did not create."""
    if root.exists():
        if not (root / MARKER_FILE).is_file() and any(root.iterdir()):
            raise DemoError(
                f"{root}: exists and was not made by `lorag demo`; choose another "
                "demo.data_dir (or --data-dir), the demo recreates its folder on each run"
            )
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / MARKER_FILE).write_text(json.dumps({"created_by": "lorag demo"}) + "\n")
