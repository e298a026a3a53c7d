from __future__ import annotations

from pathlib import Path

import pytest

from market_agent.errors import ConfigError
from market_agent.settings import load_settings
from tests.cli_helpers import run_cli
from tests.conftest import EXAMPLES


def test_defaults_need_no_config(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.predictor.url == "http://127.0.0.1:8000"
    assert settings.prometheus.url == "http://127.0.0.1:9090"
    assert settings.alertmanager.url == "http://127.0.0.1:9093"
    assert settings.audit.path == tmp_path / "home" / "state" / "market-agent" / "audit.jsonl"
    assert settings.llm.active is False
    assert settings.source is None


def test_state_dir_falls_back_to_home(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_STATE_HOME")
    expected = tmp_path / "home" / ".local" / "state" / "market-agent" / "audit.jsonl"
    assert load_settings().audit.path == expected


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_precedence_file_then_env_then_flags(monkeypatch, tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", '[llm]\nmodel = "from-file"\ntimeout = 5\n')
    assert load_settings(config).llm.model == "from-file"
    monkeypatch.setenv("MARKET_AGENT_LLM__MODEL", "from-env")
    settings = load_settings(config)
    assert (settings.llm.model, settings.llm.timeout) == ("from-env", 5)
    assert load_settings(config, {"llm.model": "from-flag"}).llm.model == "from-flag"


def test_config_file_discovery_order(monkeypatch, tmp_path: Path) -> None:
    xdg = write(tmp_path / "home/config/market-agent/config.toml", '[llm]\nmodel = "xdg"\n')
    assert load_settings().source == xdg
    local = write(tmp_path / "market-agent.toml", '[llm]\nmodel = "local"\n')
    assert load_settings().source == local.relative_to(tmp_path)
    env = write(tmp_path / "env.toml", '[llm]\nmodel = "env"\n')
    monkeypatch.setenv("MARKET_AGENT_CONFIG", str(env))
    assert load_settings().llm.model == "env"
    explicit = write(tmp_path / "explicit.toml", '[llm]\nmodel = "explicit"\n')
    assert load_settings(explicit).llm.model == "explicit"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[llm\nmodel=1", "invalid TOML"),
        ("[llm]\nmodle = 'x'\n", "unknown key 'llm.modle' (did you mean 'llm.model'?)"),
        ("[llm]\ntimeout = 'soon'\n", "key 'llm.timeout' must be a number"),
        ("[predictor]\ntimeout = -1\n", "key 'predictor.timeout' must be more than 0 seconds"),
        ("surprise = 1\n", "unknown key 'surprise'"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    config = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert str(config) in str(caught.value)
    assert message in str(caught.value)


def test_missing_and_unreadable_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(write(tmp_path / "bin.toml", "") and _binary(tmp_path / "bin.toml"))


def _binary(path: Path) -> Path:
    path.write_bytes(b"\xff\xfe\x00bad")
    return path


def test_bad_env_value_names_the_variable(monkeypatch) -> None:
    monkeypatch.setenv("MARKET_AGENT_LISTEN__PORT", "ninety")
    with pytest.raises(ConfigError, match=r"\$MARKET_AGENT_LISTEN__PORT"):
        load_settings()


def test_cli_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    config = write(tmp_path / "bad.toml", "[llm]\nmodle = 'x'\n")
    result = run_cli("--config", str(config), "analyze", str(EXAMPLES / "resolved.json"))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "llm.modle" in result.stderr and "Traceback" not in result.stderr


def test_secrets_are_never_printed(tmp_path: Path) -> None:
    config = write(
        tmp_path / "c.toml",
        '[llm]\napi_key = "sk-very-secret-value"\ntimeout = "x"\n',
    )
    result = run_cli("--config", str(config), "analyze", str(EXAMPLES / "resolved.json"))
    assert result.exit_code == 2
    assert "sk-very-secret-value" not in result.stderr + result.stdout
    settings_repr = repr(load_settings(write(tmp_path / "ok.toml", '[llm]\napi_key = "sk-abc"\n')))
    assert "sk-abc" not in settings_repr


def test_example_config_documents_every_key_and_loads() -> None:
    from tests.conftest import ROOT

    example = ROOT / "examples" / "market-agent.toml"
    settings = load_settings(example)
    text = example.read_text()
    for section in (
        "predictor",
        "prometheus",
        "alertmanager",
        "llm",
        "analysis",
        "audit",
        "listen",
    ):
        model = getattr(settings, section)
        for key in type(model).model_fields:
            assert f"{key} =" in text or f"# {key} =" in text, f"{section}.{key} undocumented"
