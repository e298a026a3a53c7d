"""`[actions]` and `[notifiers]`: typed, safe defaults, one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from market_agent.errors import ConfigError
from market_agent.settings import ActionsSettings, load_settings, parse_duration

FULL = """
[actions]
auto_remediate = true
min_confidence = 0.9
max_executions = 5
window = "30m"
cooldown = "2m"

[actions.restart]
backend = "command"
argv = ["/usr/local/bin/restart", "{instance}"]
alerts = ["PredictorDown"]
verify_timeout = "90s"
verify_query = 'up{job="market-predictor"} == 1'
cooldown = 60

[actions.restart.rollback]
backend = "systemd"
unit = "predictor-previous.service"

[actions.cleanup]
backend = "http"
url = "https://ops.example/cleanup"
matchers = [{ service = "market-predictor" }]

[notifiers.oncall]
url = "https://hooks.example/escalate"

[notifiers.chat]
type = "slack"
url = "https://hooks.slack.example/T/B/x"
attempts = 5
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_full_config_loads(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, FULL))
    actions = settings.actions
    assert set(actions.definitions) == {"restart", "cleanup"}
    restart = actions.definitions["restart"]
    assert restart.verify_timeout == 90
    assert restart.rollback is not None and restart.rollback.unit == "predictor-previous.service"
    assert actions.limits(restart) == (5, 1800, 60)
    assert actions.limits(actions.definitions["cleanup"]) == (5, 1800, 120)
    assert settings.notifiers["chat"].type == "slack"
    assert settings.notifiers["oncall"].attempts == 3


def test_defaults_are_safe() -> None:
    actions = ActionsSettings()
    assert actions.enabled is True
    assert actions.auto_remediate is False
    assert actions.min_confidence == 0.8
    assert (actions.max_executions, actions.window) == (3, 3600)
    assert actions.definitions == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[actions.restart]\nargv = ["x"]\nargx = 1\n',
            "unknown key 'actions.restart.argx' (did you mean 'actions.restart.argv'",
        ),
        ("[actions.restart]\nbackend = 'systemd'\n", "key 'actions.restart': "),
        ("[actions.restart]\nbackend = 'ssh'\nargv = ['x']\n", "key 'actions.restart.backend'"),
        ("[actions.restart]\nargv = ['x', '{hostname}']\n", "unknown placeholder {hostname}"),
        ("[actions.restart]\nargv = ['x']\ntimeout = '5 parsecs'\n", "actions.restart.timeout"),
        ("[actions]\nenabld = true\n", "unknown key 'enabld' (did you mean 'enabled'?)"),
        ("[actions]\nmin_confidence = 2\n", "key 'actions.min_confidence'"),
        ("[notifiers.x]\ntype = 'webhook'\n", "key 'notifiers.x.url'"),
        ("[notifiers.x]\nurl = 'https://a'\nretries = 3\n", "key 'notifiers.x.retries'"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert message in caught.value.message
    assert "\n" not in caught.value.message


def test_environment_overrides_the_kill_switch() -> None:
    settings = load_settings(None, environ={"MARKET_AGENT_ACTIONS__ENABLED": "false"})
    assert settings.actions.enabled is False


@pytest.mark.parametrize(
    ("value", "seconds"), [(30, 30), ("90s", 90), ("10m", 600), ("1h", 3600), ("2d", 172800)]
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["soon", "-5", True, "1y"])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)
