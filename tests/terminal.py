"""Run a command in a real pseudo-terminal and read the screen a person would see.

`ptyprocess` gives the command a real tty of the asked size (so `isatty()`, the width
and colour detection behave as in a terminal); `pyte` replays what it wrote as a VT100
would, so assertions are on the screen, not on escape sequences.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
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
    process = spawn_in_terminal(argv, columns=columns, rows=rows, env=environment, cwd=cwd)
    try:
        output = read_until_exit(process, time.monotonic() + timeout)
    finally:
        process.close(force=True)
    screen = pyte.Screen(columns, rows)
    stream = pyte.ByteStream(screen)
    stream.feed(output.replace(b"\n", b"\r\n") if b"\r\n" not in output else output)
    lines = [line.rstrip() for line in screen.display]
    while lines and not lines[-1]:
        lines.pop()
    return Screen(lines=lines, exit_status=process.exitstatus, raw=bytes(output))


def default_signals() -> None:
    """In the child, before exec: Ctrl-C back to its default.

    pytest-xdist runs tests in workers that ignore SIGINT, and an ignored signal stays
    ignored across exec: Python would then never raise KeyboardInterrupt, where in a
    user's terminal it does.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn_in_terminal(
    argv: Sequence[str],
    *,
    columns: int,
    rows: int,
    env: Mapping[str, str],
    cwd: str | Path | None = None,
) -> ptyprocess.PtyProcess:
    return ptyprocess.PtyProcess.spawn(
        list(argv),
        dimensions=(rows, columns),
        env=dict(env),
        cwd=str(cwd) if cwd else None,
        preexec_fn=default_signals,
    )


def read_until(
    process: ptyprocess.PtyProcess, deadline: float, done: Callable[[bytes], bool]
) -> bytes:
    """What the process writes until `done(output)` or it exits; TimeoutError past
    `deadline` (a monotonic time), so a hung command fails its test instead of the run."""
    output = b""
    while not done(output):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"still waiting after the deadline; the screen so far: {output!r}")
        if not select.select([process.fd], [], [], min(left, 1.0))[0]:
            continue
        try:
            output += process.read(65536)
        except EOFError:
            break
    return output


def read_until_exit(process: ptyprocess.PtyProcess, deadline: float) -> bytes:
    output = read_until(process, deadline, lambda _: False)
    process.wait()
    return output
