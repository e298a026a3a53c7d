"""`restart` as an on-call engineer sees it: the dry-run panel and the confirmation
prompt in a real terminal at 80 and 120 columns, the plain text it prints into a pipe,
and the golden screen the README shows.

The golden screen (tests/screens/restart-dry-run.txt, 80 columns) runs a `command`
action with a fixed argv through /usr/bin/env, with an empty audit log, so nothing on it
varies and nothing is normalised; regenerate it and its README copy with
`UPDATE_SCREENS=1 python -m pytest tests/test_screens_restart.py`.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.golden import SCREENS, assert_readme_copy, assert_screen
from tests.terminal import Screen
from tests.user_runs import BOX, conversation, panel_lines, piped, terminal

WIDTHS = [80, 120]
PREDICTORCTL = "/opt/market-predictor/bin/predictorctl"
GOLDEN_ARGV = [
    "/usr/bin/env", "PREDICTOR_GRACE_SECONDS=30", PREDICTORCTL, "restart",
    "--instance", "127.0.0.1:8000", "--reason", "requested by market-agent (on-call)",
]  # fmt: skip
GOLDEN_ACTION = {"argv": GOLDEN_ARGV, "verify_query": 'up{job="market-predictor"} == 1'}
GOLDEN_ROLLBACK = {"argv": ["/usr/bin/env", PREDICTORCTL, "rollback", "--to", "previous"]}


# Running commands ---------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return home


def configure(home: Path, action: dict[str, Any], rollback: dict[str, Any] | None = None) -> None:
    """The user's config (at the XDG default path) with this restart action."""
    config = home / ".config" / "market-agent" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    text = f'[predictor]\nurl = "http://127.0.0.1:18999"\n[actions]\npause_file = "{home}/paused"\n'
    text += "[actions.restart]\n" + _toml(action)
    if rollback:
        text += "[actions.restart.rollback]\n" + _toml(rollback)
    config.write_text(text)


def _toml(table: dict[str, Any]) -> str:
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in table.items())


def section(lines: list[str], heading: str, end: str | None = None) -> list[str]:
    start = next(n for n, line in enumerate(lines) if line.startswith(heading))
    stop = next((n for n, line in enumerate(lines) if end and line.startswith(end)), len(lines))
    return lines[start + 1 : stop]


def unwrapped(lines: list[str]) -> str:
    """A command shown by `ShellCommand`, as one line again: ` \\` ends a line broken
    between arguments; a line without it was cut inside an argument."""
    joined = ""
    for line in lines:
        text = line.strip()
        if text.startswith("$ "):
            text = text[2:]
        joined += text[:-2] + " " if text.endswith(" \\") else text
    return joined


def squeezed(text: str) -> str:
    """`text` without white space: what is left when wrapping is not counted."""
    return "".join(text.split())


# Golden screen ------------------------------------------------------------------


def test_golden_dry_run_screen(home: Path) -> None:
    configure(home, GOLDEN_ACTION, GOLDEN_ROLLBACK)
    screen = terminal(home, ["restart", "--dry-run"], 80)
    assert screen.exit_status == 0, screen.text
    assert_screen("restart-dry-run.txt", f"$ market-agent restart --dry-run\n{screen.text}")


def test_the_readme_shows_the_golden_screen() -> None:
    assert_readme_copy("restart-dry-run.txt", (SCREENS / "restart-dry-run.txt").read_text())


# Nothing cut off, hanging indents -----------------------------------------------


def long_action(home: Path) -> list[str]:
    """An argv wider than any terminal here: a long path, a quoted argument with spaces."""
    directory = home / ("a-directory-name-long-enough-to-need-more-than-one-line-" * 2)
    marker = directory / "restarted"
    return [sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write('x')", str(marker)]


@pytest.mark.parametrize("columns", WIDTHS)
def test_the_command_is_shown_whole_and_wraps_under_itself(home: Path, columns: int) -> None:
    argv = long_action(home)
    configure(home, {"argv": argv, "verify_health": False})
    screen = terminal(home, ["restart", "--dry-run"], columns)
    assert screen.exit_status == 0, screen.text
    assert all(len(line) <= columns for line in screen.lines)
    lines = panel_lines(screen)
    command = section(lines, "Will run", "Verify:")
    assert command[0].startswith("  $ ")
    assert all(line.startswith("    ") for line in command[1:]), command
    assert unwrapped(command) == shlex.join(argv)
    assert "…" not in screen.text and "..." not in screen.text


@pytest.mark.parametrize("columns", WIDTHS)
def test_permission_and_guard_lines_hang_under_their_text(home: Path, columns: int) -> None:
    """A blocked dry run: the pause file's long path in the kill switch's line, a missing
    program's long path in the permission's lines."""
    program = str(home / ("no-such-restart-program-" * 5))
    configure(home, {"argv": [program, "restart", "market-predictor"], "verify_health": False})
    (home / "paused").touch()
    screen = terminal(home, ["restart", "--dry-run"], columns)
    assert screen.exit_status == 5, screen.text
    lines = panel_lines(screen)
    permission, guards = section(lines, "Permission:", "Guards:"), section(lines, "Guards:")
    for line in permission + guards:
        assert line[:4] in ("  ✓ ", "  ✗ ", "  ? ", "    "), screen.text
    assert len(permission) > 2 and len(guards) > 7  # the long lines did wrap
    data = json.loads(piped(home, ["restart", "--dry-run", "--json"]).stdout)
    shown = squeezed("\n".join(lines))
    for item in data["permissions"]:
        assert squeezed(f"{item['needs']} {item['has']}: {item['detail']}") in shown
    for guard in data["guards"]:
        assert squeezed(f"{guard['name']}: {guard['detail']}") in shown


# Piped output -------------------------------------------------------------------


def test_piped_dry_run_is_plain_text_with_the_command_on_one_line(home: Path) -> None:
    argv = long_action(home)
    configure(home, {"argv": argv, "verify_health": False})
    result = piped(home, ["restart", "--dry-run"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert not BOX & set(result.stdout)
    assert "\x1b" not in result.stdout
    assert all(line == line.rstrip() for line in lines)
    assert lines[:3] == [
        "restart: ready",
        "Will run (command, within 120 s):",
        f"  $ {shlex.join(argv)}",
    ]
    assert "  ✓ single_flight: no other run in progress" in lines


def test_piped_result_is_plain_text_without_padding(home: Path) -> None:
    configure(home, {"argv": ["true"], "verify_health": False})
    result = piped(home, ["restart", "--yes"])
    assert result.returncode == 0, result.stderr
    heading, *steps = result.stdout.splitlines()
    assert heading.startswith("restart: verified  (action ")
    assert steps[0].split() == ["execute", "started"]
    assert all(line.startswith("  ") and line == line.rstrip() for line in steps), steps
    assert not BOX & set(result.stdout)


# The confirmation prompt --------------------------------------------------------


@pytest.mark.parametrize("columns", WIDTHS)
def test_the_prompt_shows_the_whole_command_before_asking(home: Path, columns: int) -> None:
    argv = long_action(home)
    configure(home, {"argv": argv, "verify_health": False})
    shown = conversation(
        home, ["restart"], columns, wait_for=b"Run it?", then=lambda p: p.write(b"n\n")
    )
    assert shown.exit_status == 5
    asked = next(n for n, line in enumerate(shown.lines) if line.startswith("Run it?"))
    before = panel_lines(Screen(shown.lines[:asked], None, b""))
    assert unwrapped(section(before, "Will run", "Verify:")) == shlex.join(argv)
    assert not (Path(argv[-1])).exists()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
