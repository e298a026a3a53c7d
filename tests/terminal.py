"""Run a command in a real pseudo-terminal and read the screen a person would see.

`ptyprocess` gives the command a real tty of the asked size (so `isatty()`, the width
and colour detection behave as in a terminal); `pyte` replays what it wrote as a VT100
would, so assertions are on the screen, not on escape sequences.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import ptyprocess
import pyte

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Screen:
    lines: list[str]  # every row, trailing blanks stripped, trailing empty rows dropped
    exit_status: int | None
    raw: bytes

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def run_in_terminal(
    args: Sequence[str],
    *,
    columns: int,
    rows: int = 400,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    cwd: str | Path | None = None,
) -> Screen:
    """`market-agent ARGS` in a `columns`-wide pseudo-terminal; the screen once it exits.

    `rows` is tall on purpose: the whole output stays on one screen, with no scrolling.
    """
    environment = dict(os.environ)
    environment.pop("NO_COLOR", None)  # the test suite sets it; a terminal user has not
    environment.update(env or {})
    environment.update({"TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": str(rows)})
    environment.setdefault("PYTHONPATH", str(ROOT))
    argv = [sys.executable, "-m", "market_agent", *args]
    process = ptyprocess.PtyProcess.spawn(
        argv, dimensions=(rows, columns), env=environment, cwd=str(cwd) if cwd else None
    )
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                output += process.read(65536)
            except EOFError:
                break
        else:
            raise TimeoutError(f"{args} still running after {timeout} s")
    finally:
        process.close(force=True)
    screen = pyte.Screen(columns, rows)
    stream = pyte.ByteStream(screen)
    stream.feed(bytes(output).replace(b"\n", b"\r\n") if b"\r\n" not in output else bytes(output))
    lines = [line.rstrip() for line in screen.display]
    while lines and not lines[-1]:
        lines.pop()
    return Screen(lines=lines, exit_status=process.exitstatus, raw=bytes(output))
