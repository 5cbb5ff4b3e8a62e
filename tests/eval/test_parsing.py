"""Small parsers of the eval commands: configurations, judge grades, URLs, replacements."""

import pytest

from eval.answers import parse_configurations
from eval.client import api_base, server_root
from eval.judge import parse_grade
from eval.load import Replacement
from eval.settings import EvalSettings


def test_parse_configurations() -> None:
    configs = parse_configurations("adapter+rag, base,BASE")
    assert [(c.name, c.adapter, c.retrieval) for c in configs] == [
        ("adapter+rag", True, True),
        ("base", False, False),
    ]
    with pytest.raises(ValueError, match="unknown configuration.*rag-only"):
        parse_configurations("base,rag-only")
    with pytest.raises(ValueError, match="unknown configuration"):
        parse_configurations(" , ")


def test_parse_grade() -> None:
    assert parse_grade("5") == 1.0
    assert parse_grade("Grade: 3/5") == 0.5
    assert parse_grade("1") == 0.0
    assert parse_grade("10") is None  # not a 1-5 digit on its own
    assert parse_grade("no idea") is None


def test_urls() -> None:
    assert api_base("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1"
    assert api_base("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/v1"
    assert server_root("http://h:1/v1") == "http://h:1"
    with pytest.raises(ValueError, match="http"):
        api_base("127.0.0.1:8000")


def test_replacement_parse() -> None:
    assert Replacement.parse("shop=shop/v2") == Replacement("shop", "shop/v2")
    for bad in ("shop", "=x", "shop="):
        with pytest.raises(ValueError, match="NAME=PATH"):
            Replacement.parse(bad)


def test_settings_defaults_and_validation() -> None:
    settings = EvalSettings()
    assert settings.judge.enabled is False
    assert str(settings.report_dir) == "reports"
    assert EvalSettings(k_values=[10, 1, 5, 5]).k_values == [1, 5, 10]
    with pytest.raises(ValueError, match="base_url and model"):
        EvalSettings.model_validate({"judge": {"enabled": True}})
    with pytest.raises(ValueError, match="stride"):
        EvalSettings.model_validate({"perplexity": {"max_length": 64, "stride": 64}})
    with pytest.raises(ValueError, match="between 1 and 100"):
        EvalSettings(k_values=[0])


def test_eval_section_of_the_config(tmp_path, monkeypatch) -> None:
    from lorag.config import ConfigError, load_config

    path = tmp_path / "lorag.yaml"
    path.write_text("eval:\n  report_dir: out\n  k_values: [3, 1]\n  load:\n    concurrency: 2\n")
    monkeypatch.setenv("LORAG_EVAL__MAX_TOKENS", "32")
    config = load_config(path)
    assert str(config.eval.report_dir) == "out" and config.eval.k_values == [1, 3]
    assert config.eval.load.concurrency == 2 and config.eval.max_tokens == 32
    path.write_text("eval:\n  judge:\n    enabled: true\n    modle: x\n")
    with pytest.raises(ConfigError, match="eval.judge.modle: unknown key"):
        load_config(path)
