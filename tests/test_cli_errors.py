"""Errors in the user's words: the flag, key or variable they typed, every problem at
once, a suggestion for a near miss; and Ctrl-C exits 130, from a real SIGINT."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from market_agent.errors import ConfigError, ExitCode, closest, describe_problem
from market_agent.settings import load_settings
from tests.cli_helpers import run_cli
from tests.conftest import ROOT
from tests.terminal import default_signals, read_until, read_until_exit, spawn_in_terminal

# Flags -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status", "--watch", "0.1"], "Error: --watch must be at least 0.5 seconds (got 0.1)"),
        (["status", "--watch", "soon"], "Error: --watch must be a number"),
        (["history", "--limit", "-1"], "Error: --limit must be at least 0 (got -1)"),
        (["listen", "--port", "70000"], "Error: --port must be at most 65535 (got 70000)"),
        (["listen", "--workers", "0"], "Error: --workers must be at least 1 (got 0)"),
    ],
)
def test_a_bad_flag_value_is_a_sentence_about_the_flag(args: list[str], message: str) -> None:
    result = run_cli(*args)
    assert result.exit_code == ExitCode.USAGE
    assert message in result.stderr.splitlines()
    assert "Input should" not in result.stderr
    assert "listen." not in result.stderr


def test_a_settings_problem_from_a_flag_names_the_flag() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            overrides={"listen.log_format": "yaml", "listen.port": None},
            flags={"listen.log_format": "--log-format", "listen.port": "--port"},
        )
    assert caught.value.message == "--log-format must be one of: text, json (got 'yaml')"


# Configuration -----------------------------------------------------------------------


def test_every_config_problem_is_listed_one_per_line(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[llm]\ntimout = 3\n[listen]\nport = 70000\n[prometeus]\nurl = 'x'\n")
    result = run_cli("--config", str(config), "status")
    assert result.exit_code == ExitCode.USAGE
    assert result.stderr.splitlines() == [
        f"error: config file {config}: 3 problems:",
        "  unknown key 'llm.timout' (did you mean 'llm.timeout'?)",
        "  key 'listen.port' must be at most 65535 (got 70000)",
        "  unknown key 'prometeus' (did you mean 'prometheus'?)",
    ]


def test_one_config_problem_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[analysis]\ncontext_timeout = 0\n")
    result = run_cli("--config", str(config), "status")
    assert result.stderr == (
        f"error: config file {config}: key 'analysis.context_timeout' "
        "must be more than 0 seconds (got 0)\n"
    )


def test_an_environment_variable_is_named_as_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKET_AGENT_LLM__TIMOUT", "3")
    result = run_cli("status")
    assert result.exit_code == ExitCode.USAGE
    assert (
        "$MARKET_AGENT_LLM__TIMOUT is not a setting (did you mean $MARKET_AGENT_LLM__TIMEOUT?)"
        in result.stderr
    )


def test_a_misspelt_action_setting_gets_a_suggestion(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[actions]\ncooldwn = '5m'\n[notifiers.pager]\nurll = 'https://x'\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert "unknown key 'cooldwn' (did you mean 'cooldown'?)" in caught.value.message


def test_secrets_are_not_echoed_in_config_errors(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[llm]\napi_kee = 'sk-secret'\napi_key = 987654321\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert "sk-secret" not in caught.value.message and "987654321" not in caught.value.message


def test_problem_phrases() -> None:
    too_short = {"type": "too_short", "loc": ("alerts",), "ctx": {"min_length": 1}}
    assert describe_problem(too_short, "alerts") == "alerts must not be empty"
    unknown = {"type": "weird_new_type", "msg": "Input is odd", "loc": ()}
    assert describe_problem(unknown, "x") == "x: input is odd"
    assert closest("timout", ["timeout", "model"]) == "timeout"
    assert closest("zzz", ["timeout"]) is None


# Input files -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"alerts": [', "not valid JSON: it ended early at line 1 column 13 (truncated?)"),
        ('{\n  "alerts": [\n    {"labels": {"a": "b', "ended early at line 3 column 24"),
        ('{"alerts": []}', "status is required; alerts must not be empty"),
    ],
)
def test_input_problems_in_plain_words(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "in.json"
    path.write_text(content)
    result = run_cli("--no-audit", "analyze", str(path))
    assert result.exit_code == ExitCode.USAGE
    assert message in result.stderr
    assert "List should" not in result.stderr and "more problems" not in result.stderr


def test_a_cut_off_json_lines_line_names_its_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    good = json.dumps({"status": "firing", "alerts": [{"labels": {"alertname": "X"}}]})
    path.write_text(f'{good}\n{{"alerts": [\n')
    result = run_cli("--no-audit", "analyze", "--json", str(path))
    assert result.stderr == (
        f"error: {path}: line 2: not valid JSON: it ended early at column 13 (truncated?)\n"
    )


def test_many_input_problems_are_counted_past_ten(tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    path.write_text(json.dumps({"status": "firing", "alerts": [{"labels": 1}] * 12}))
    result = run_cli("--no-audit", "analyze", str(path))
    assert result.stderr.count("must be an object") == 10
    assert "and 2 more problems like these" in result.stderr


# Ctrl-C ------------------------------------------------------------------------------


def _refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def unreachable_config(tmp_path: Path) -> Path:
    config = tmp_path / "unreachable.toml"
    urls = {name: f"http://127.0.0.1:{_refused_port()}" for name in ("predictor", "prometheus")}
    urls["alertmanager"] = f"http://127.0.0.1:{_refused_port()}"
    config.write_text("".join(f'[{name}]\nurl = "{url}"\n' for name, url in urls.items()))
    return config


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_ctrl_c_stops_status_watch_with_130(unreachable_config: Path) -> None:
    argv = [sys.executable, "-m", "market_agent", "-c", str(unreachable_config)]
    process = subprocess.Popen(
        [*argv, "status", "--watch", "0.5", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
        preexec_fn=default_signals,
    )
    try:
        assert process.stdout is not None
        first = json.loads(process.stdout.readline())  # it is watching
        assert first["overall"] == "unhealthy"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == ExitCode.INTERRUPTED
    assert stderr.decode().strip().splitlines()[-1] == "error: interrupted"


def test_ctrl_c_in_a_terminal_stops_the_live_view_with_130(unreachable_config: Path) -> None:
    argv = [sys.executable, "-m", "market_agent", "-c", str(unreachable_config)]
    process = spawn_in_terminal(
        [*argv, "status", "--watch", "0.5"], columns=100, rows=40, env=_env()
    )
    deadline = time.monotonic() + 60
    try:
        seen = read_until(process, deadline, lambda seen: b"market-agent status" in seen)
        process.kill(signal.SIGINT)
        seen += read_until_exit(process, deadline)
    finally:
        process.close(force=True)
    assert process.exitstatus == ExitCode.INTERRUPTED
    assert b"error: interrupted" in seen


@pytest.mark.parametrize(
    "args",
    [
        ["--no-audit", "analyze", "--no-llm", str(ROOT / "examples" / "alerts" / "resolved.json")],
        [
            "--no-audit",
            "analyze",
            "--no-llm",
            "--json",
            str(ROOT / "examples" / "alerts" / "predictor-down.json"),
        ],
        ["history", "--json"],
    ],
    ids=["analyze", "analyze-json", "history"],
)
def test_a_reader_that_went_away_is_not_an_alert(args: list[str], tmp_path: Path) -> None:
    """`market-agent ... | head -0`: Typer turned the broken pipe into exit 1 (ALERT)."""
    audit = tmp_path / "audit.jsonl"
    run_cli(
        "--audit-log",
        str(audit),
        "analyze",
        "--no-llm",
        str(ROOT / "examples" / "alerts" / "predictor-down.json"),
    )
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "market_agent", "--audit-log", str(audit), *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=_env(),
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert result.returncode == ExitCode.OK, result.stderr
    assert result.stderr == b""
