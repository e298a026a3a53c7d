"""Help screens as a person reads them: in a real 80-column terminal, kept as golden
text under tests/screens/help-*.txt (regenerate with `UPDATE_SCREENS=1 python -m
pytest tests/test_cli_help.py`)."""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

import pytest
import typer

from market_agent.cli import app
from market_agent.errors import ExitCode
from tests.cli_helpers import run_cli
from tests.terminal import run_in_terminal

SCREENS = Path(__file__).parent / "screens"
COMMANDS = [
    "",
    "analyze",
    "listen",
    "status",
    "restart",
    "history",
    "history stats",
    "history show",
    "history verify",
]
COLUMNS = 80


def screen_name(command: str) -> str:
    return f"help-{command.replace(' ', '-') or 'root'}.txt"


@pytest.fixture(scope="module")
def screens() -> dict[str, str]:
    found = {}
    for command in COMMANDS:
        screen = run_in_terminal([*command.split(), "--help"], columns=COLUMNS)
        assert screen.exit_status == 0, screen.text
        found[command] = screen.text
    return found


@pytest.mark.parametrize("command", COMMANDS)
def test_help_screen_matches_its_golden_copy(screens: dict[str, str], command: str) -> None:
    golden = SCREENS / screen_name(command)
    if os.environ.get("UPDATE_SCREENS"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(screens[command])
    assert screens[command] == golden.read_text()


def cut_words(text: str, columns: int) -> list[str]:
    """Lines the terminal wrapped (they fill the row) or the wrapper split at a hyphen
    inside a word (`market-` / `agent`)."""
    lines = text.splitlines()
    found = [line for line in lines if len(line) >= columns]
    for line, following in itertools.pairwise(lines):
        if re.search(r"[A-Za-z]-$", line) and re.match(r"\s*[a-z]", following):
            found.append(f"{line} / {following.strip()}")
    return found


def python_types(text: str) -> list[str]:
    return re.findall(r"<[^>\n]*>|\blist\[\w*\]?|\bx[<>]=", text)


@pytest.mark.parametrize("command", COMMANDS)
def test_no_word_is_cut_and_no_python_type_shows(screens: dict[str, str], command: str) -> None:
    assert cut_words(screens[command], COLUMNS) == []
    assert python_types(screens[command]) == []


def test_the_checks_catch_what_they_are_for() -> None:
    old = "  -c, --config <path>  $XDG_CONFIG_HOME/market-\n                       agent/\n"
    assert len(cut_words(old, COLUMNS)) == 1
    assert cut_words("x" * 80 + "\n", COLUMNS) == ["x" * 80]
    assert python_types("FILE... <list[str]>  --workers <int range>  [x>=1]") == [
        "<list[str]>",
        "<int range>",
        "x>=",
    ]


def test_top_level_help_gives_each_command_a_whole_line(screens: dict[str, str]) -> None:
    commands = screens[""].split("Commands:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in commands] == [
        "analyze",
        "listen",
        "status",
        "restart",
        "history",
    ]
    assert not any(line.rstrip().endswith("...") for line in commands)
    assert all(line.rstrip().endswith(".") for line in commands)  # one line, complete


def _subcommands() -> dict[str, object]:
    root = typer.main.get_command(app)
    found: dict[str, object] = {}
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        found[name] = command
        for sub, inner in getattr(command, "commands", {}).items():
            found[f"{name} {sub}"] = inner
    return found


@pytest.mark.parametrize("command", COMMANDS[1:])
def test_each_command_ends_with_examples_and_its_exit_codes(
    screens: dict[str, str], command: str
) -> None:
    epilog = screens[command].split("\n  Examples:\n", 1)[1]
    examples, codes = epilog.split("\n  Exit codes:\n")
    example_lines = [line.strip() for line in examples.splitlines() if line.strip()]
    assert 2 <= len(example_lines) <= 3
    assert all(line.startswith(("market-agent ", "amtool ")) for line in example_lines)
    numbers = [int(line.split()[0]) for line in codes.splitlines() if line.strip()]
    assert set(numbers) <= {int(code) for code in ExitCode}
    assert {0, 2} <= set(numbers)
    assert set(_subcommands()) == set(COMMANDS[1:])


def test_usage_and_error_name_the_file_argument_alike() -> None:
    screen = run_in_terminal(["analyze"], columns=COLUMNS)  # stdin is a terminal
    assert screen.exit_status == ExitCode.USAGE
    assert "Usage: market-agent analyze [OPTIONS] [FILE]..." in screen.text
    assert "FILE...: give one or more files, or - to read stdin" in screen.text
    assert "FILES" not in screen.text


def test_a_required_argument_is_not_shown_in_braces() -> None:
    result = run_cli("history", "show", "--help")
    assert "Usage: market-agent history show [OPTIONS] ID\n" in result.stdout
    assert "{ID}" not in result.stdout
