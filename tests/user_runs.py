"""Run `market-agent` as a fresh user would: in a real terminal or into a pipe.

The user's HOME (a test's temporary directory) holds the XDG defaults, so config and
audit log are where a user's would be; TZ=UTC keeps local times fixed; NO_COLOR, which
the test suite sets, is dropped, as a user has not set it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tests.terminal import (
    ROOT,
    Screen,
    read_until,
    read_until_exit,
    run_in_terminal,
    spawn_in_terminal,
)

if TYPE_CHECKING:
    from ptyprocess import PtyProcess

#: Box-drawing characters: none of them belongs in piped output.
BOX = set("─│╭╮╰╯━┃")


def user_env(home: Path, **extra: str) -> dict[str, str]:
    return {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "TZ": "UTC",
        **extra,
    }


def terminal(home: Path, args: list[str], columns: int, **env: str) -> Screen:
    return run_in_terminal(args, columns=columns, env=user_env(home, **env), cwd=home)


def piped(home: Path, args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **user_env(home, **env), "PYTHONPATH": str(ROOT)}
    environment.pop("NO_COLOR", None)
    return subprocess.run(
        [sys.executable, "-m", "market_agent", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=home,
        timeout=120,
    )


def panel_lines(screen: Screen) -> list[str]:
    """The text inside the panel borders."""
    return [line[2:-1].rstrip() for line in screen.lines if line.startswith("│")]


def conversation(
    home: Path,
    args: list[str],
    columns: int,
    *,
    wait_for: bytes,
    times: int = 1,
    then: Callable[[PtyProcess], object],
    rows: int = 100,
    timeout: float = 60.0,
) -> Screen:
    """`market-agent ARGS` in a real terminal: once it has written `wait_for` `times`
    times, `then` (type an answer, press Ctrl-C); the screen once it exits."""
    import pyte

    environment = {**os.environ, **user_env(home), "PYTHONPATH": str(ROOT), "TERM": "xterm"}
    environment.pop("NO_COLOR", None)
    argv = [sys.executable, "-m", "market_agent", *args]
    process = spawn_in_terminal(argv, columns=columns, rows=rows, env=environment, cwd=home)
    deadline = time.monotonic() + timeout
    try:
        output = read_until(process, deadline, lambda seen: seen.count(wait_for) >= times)
        then(process)
        output += read_until_exit(process, deadline)
    finally:
        process.close(force=True)
    screen = pyte.Screen(columns, rows)
    pyte.ByteStream(screen).feed(output)
    return Screen([line.rstrip() for line in screen.display], process.exitstatus, output)
