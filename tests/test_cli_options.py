"""Options as a user of gh or kubectl expects them: global options before or after the
command, shell completion, and every choice validated with the valid values listed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Annotated, get_args

import pytest
import typer

from market_agent.cli import _command
from market_agent.commands import listen
from market_agent.commands.argv import split_global_options
from market_agent.commands.history import RecordKind
from market_agent.errors import ExitCode
from market_agent.settings import ListenSettings
from tests.cli_helpers import run_cli
from tests.conftest import EXAMPLES, ROOT

RESOLVED = str(EXAMPLES / "resolved.json")
DOWN = str(EXAMPLES / "predictor-down.json")


# Global options anywhere ------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "options", "rest"),
    [
        ("analyze f.json --no-audit --debug", "--no-audit --debug", "analyze f.json"),
        ("history verify --audit-log X", "--audit-log X", "history verify"),
        ("status --config x.toml", "--config x.toml", "status"),
        ("status --config=x.toml --json", "--config=x.toml", "status --json"),
        ("analyze -cx.toml f.json", "-cx.toml", "analyze f.json"),
        ("-c a.toml analyze --audit-log b f", "-c a.toml --audit-log b", "analyze f"),
        ("analyze -- --debug", "", "analyze -- --debug"),  # after --: a file name
        ("restart --reason --debug --yes", "", "restart --reason --debug --yes"),  # a value
        ("history show --json abc --no-audit", "--no-audit", "history show --json abc"),
    ],
)
def test_global_options_are_moved_before_the_command(argv: str, options: str, rest: str) -> None:
    assert split_global_options(argv.split(), _command()) == (options.split(), rest.split())


def test_a_new_root_option_needs_no_code() -> None:
    demo = typer.Typer()

    @demo.callback()
    def root(
        color: Annotated[bool, typer.Option("--color/--no-color")] = True,
        level: Annotated[int, typer.Option("--level")] = 0,
    ) -> None: ...

    @demo.command()
    def show(name: str) -> None: ...

    @demo.command()
    def tune(level: Annotated[str, typer.Option("--level")] = "") -> None: ...

    command = typer.main.get_command(demo)
    argv = ["show", "--no-color", "x", "--level", "3"]
    assert split_global_options(argv, command) == (["--no-color", "--level", "3"], ["show", "x"])
    # A command's own option of the same name is its own.
    assert split_global_options(["tune", "--level", "high"], command) == (
        [],
        ["tune", "--level", "high"],
    )


def test_no_audit_and_debug_after_the_command(tmp_path: Path, audit_path: Path) -> None:
    result = run_cli("analyze", "--json", RESOLVED, "--no-audit")
    assert result.exit_code == 0, result.stderr
    assert not audit_path.exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    failing = run_cli("analyze", RESOLVED, "--audit-log", str(blocker / "a.jsonl"), "--debug")
    assert failing.exit_code == ExitCode.AUDIT
    assert "Traceback" in failing.stderr


def test_audit_log_after_a_nested_command(tmp_path: Path) -> None:
    log = tmp_path / "elsewhere.jsonl"
    assert run_cli("--audit-log", str(log), "analyze", RESOLVED).exit_code == 0
    result = run_cli("history", "verify", "--json", "--audit-log", str(log))
    assert result.exit_code == 0, result.stderr
    assert result.json_lines()[0]["records"] == 2


def test_config_after_the_command_is_read(tmp_path: Path) -> None:
    result = run_cli("status", "--json", "--config", str(tmp_path / "absent.toml"))
    assert result.exit_code == ExitCode.USAGE
    assert "absent.toml does not exist" in result.stderr


def test_nothing_after_a_double_dash_moves() -> None:
    result = run_cli("analyze", "--", "--no-audit")
    assert result.exit_code == ExitCode.USAGE
    assert "--no-audit: no such file" in result.stderr


# Shell completion -------------------------------------------------------------------


def _market_agent(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "market_agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        check=False,
    )


def test_completion_completes_commands_and_options() -> None:
    env = {"_MARKET_AGENT_COMPLETE": "complete_bash", "COMP_CWORD": "1"}
    commands = _market_agent([], {**env, "COMP_WORDS": "market-agent hi"})
    assert commands.stdout.split() == ["history"]
    options = _market_agent(
        [], {**env, "COMP_WORDS": "market-agent analyze --fa", "COMP_CWORD": "2"}
    )
    assert options.stdout.split() == ["--fail-on"]


def test_show_completion_prints_a_script() -> None:
    shown = _market_agent(
        ["--show-completion", "bash"], {"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    )
    assert shown.returncode == 0, shown.stderr
    assert "_MARKET_AGENT_COMPLETE=complete_bash" in shown.stdout
    assert "--install-completion" in run_cli("--help").stdout


# Choices ----------------------------------------------------------------------------


def test_unknown_kind_is_a_usage_error_listing_the_kinds() -> None:
    result = run_cli("history", "--kind", "bogus")
    assert result.exit_code == ExitCode.USAGE
    assert result.stdout == ""
    for kind in RecordKind:
        assert f"'{kind.value}'" in result.stderr


def test_kind_help_lists_every_kind_and_filters_by_it(audit_path: Path) -> None:
    help_text = " ".join(run_cli("history", "--help").stdout.split())
    for kind in RecordKind:
        assert kind.value in help_text
    run_cli("analyze", RESOLVED)
    result = run_cli("history", "--kind", "analysis", "--kind", "analysis_failed", "--json")
    assert [record["kind"] for record in result.json_lines()] == ["analysis"]


#: How the code names the kind of a record it writes to the audit log.
WRITER = re.compile(
    r"""prepare\(\s*"(\w+)"                               # prepare("analysis", ...)
    | audit\.append\(\s*"(\w+)"                          # audit.append("action", ...)
    | append_many\(\[\("(\w+)"                            # append_many([("x", r) ...])
    | \("(\w+)",\s*(?:notification_record|analysis\.to_json_dict)
    | \b[A-Z_]*KIND\s*=\s*"(\w+)"                        # STEP_KIND = "investigation_step"
    """,
    re.VERBOSE,
)


def test_record_kinds_match_what_the_code_writes() -> None:
    written = set()
    for path in (ROOT / "market_agent").rglob("*.py"):
        for match in WRITER.finditer(path.read_text()):
            written.add(next(group for group in match.groups() if group))
    assert written == {kind.value for kind in RecordKind}


@pytest.mark.parametrize(
    ("choice", "field"),
    [
        (listen.AnalysisMode, "analysis"),
        (listen.LogFormat, "log_format"),
        (listen.LogLevel, "log_level"),
    ],
)
def test_listen_choices_are_the_settings_choices(choice: object, field: str) -> None:
    annotation = ListenSettings.model_fields[field].annotation
    assert get_args(choice) == get_args(annotation)


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--log-format", "yaml"), ("--log-level", "loud"), ("--analysis", "fork")],
)
def test_listen_choice_flags_are_checked_before_anything_starts(flag: str, value: str) -> None:
    result = run_cli("listen", flag, value)
    assert result.exit_code == ExitCode.USAGE
    assert f"Error: {flag}: '{value}' is not one of" in result.stderr
    assert "listen." not in result.stderr  # the flag, not the config key


@pytest.mark.parametrize(
    ("label", "code"),
    [("warning", ExitCode.ALERT), ("p1", ExitCode.ALERT), ("WARN", ExitCode.ALERT)],
)
def test_fail_on_accepts_the_labels_the_analyzer_maps(label: str, code: ExitCode) -> None:
    result = run_cli("--no-audit", "analyze", "--json", "--fail-on", label, DOWN)
    assert result.exit_code == code, result.stderr
    assert json.loads(result.stdout)["severity"] == "critical"


def test_fail_on_a_label_uses_its_level() -> None:
    # resolved.json is analysed as info: `minor` (low) is not met, `info` is.
    assert run_cli("--no-audit", "analyze", "--fail-on", "minor", RESOLVED).exit_code == 0
    assert run_cli("--no-audit", "analyze", "--fail-on", "info", RESOLVED).exit_code == 1


def test_unknown_fail_on_lists_levels_and_labels() -> None:
    result = run_cli("--no-audit", "analyze", "--fail-on", "catastrophic", RESOLVED)
    assert result.exit_code == ExitCode.USAGE
    assert "critical, high, medium, low, info" in result.stderr
    assert "warning" in result.stderr and "p1" in result.stderr
