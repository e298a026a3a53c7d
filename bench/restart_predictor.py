#!/usr/bin/env python3
"""Restart the demo predictor: the `command` action of `bench/bench_loop.py`.

    restart_predictor.py PIDFILE HOST:PORT LOG [PREDICTOR OPTION ...]

Stops the predictor whose PID is in PIDFILE (SIGTERM, SIGKILL after 3 s; nothing to
do if it is already dead), waits for its port to close, starts a new one detached
(its own session, so it outlives this script), writes its PID to PIDFILE and exits at
once: whether the new one comes up healthy is for the action's verification to see.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STOP_GRACE = 3.0
PORT_WAIT = 10.0


def running(pid: int) -> bool:
    """Alive and not a zombie (a container's PID 1 may never reap the old one)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def stop(pid: int) -> None:
    if not running(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    if running(pid):
        os.kill(pid, signal.SIGKILL)


def wait_port_closed(host: str, port: int) -> None:
    deadline = time.monotonic() + PORT_WAIT
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((host, port)) != 0:
                return
        time.sleep(0.01)


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    pidfile, address, log, *options = argv
    host, port = address.rsplit(":", 1)
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        stop(int(Path(pidfile).read_text()))
    wait_port_closed(host, int(port))
    with open(log, "ab") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "examples.predictor", "--host", host, "--port", port, *options],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    Path(pidfile).write_text(str(child.pid))
    print(f"started predictor {child.pid}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
