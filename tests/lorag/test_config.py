from pathlib import Path

import pytest

from lorag.config import ConfigError, load_config


def test_defaults_need_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LORAG_CONFIG", raising=False)
    config = load_config()
    assert config.retrieval.mode == "hybrid"
    assert config.retrieval.qdrant.url is None


def test_environment_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "lorag.yaml"
    path.write_text("retrieval:\n  k: 7\n  qdrant:\n    timeout_s: 3\n")
    monkeypatch.setenv("LORAG_RETRIEVAL__QDRANT__URL", "http://qdrant:6333")
    config = load_config(path)
    assert config.retrieval.k == 7
    assert config.retrieval.qdrant.timeout_s == 3
    assert config.retrieval.qdrant.url == "http://qdrant:6333"


def test_bad_keys_and_values_are_named(tmp_path: Path) -> None:
    path = tmp_path / "lorag.yaml"
    path.write_text("retrieval:\n  k: zero\n  bogus: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    assert "retrieval.k" in message
    assert "retrieval.bogus: unknown key" in message


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "lorag.yaml"
    path.write_text("retrieval:\n  k: 5\n  mode: [dense\n")
    with pytest.raises(ConfigError, match=r"lorag\.yaml:4:\d+: invalid YAML"):
        load_config(path)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_secret_values_are_not_echoed(tmp_path: Path) -> None:
    path = tmp_path / "lorag.yaml"
    path.write_text("serving:\n  api_keys:\n    - {key: short, scopes: [chat]}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "serving.api_keys.0.key" in str(err.value)
    assert "short" not in str(err.value)
