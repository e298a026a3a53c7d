"""Child processes with a log file, stopped by PID."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

from tests.helpers.net import wait_for_http


class ManagedProcess:
    """A child process whose stdout and stderr go to ``log_path``.

    ``env`` entries are added to (not substituted for) the current environment.
    Use as a context manager, or call :meth:`start` and :meth:`stop` yourself;
    :meth:`stop` sends SIGTERM to this PID only, then SIGKILL after ``grace``.
    """

    def __init__(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.argv = [os.fspath(arg) for arg in argv]
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> ManagedProcess:
        if self._popen is not None:
            raise RuntimeError(f"{self.argv[0]} already started (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        return self

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        if self._popen is None:
            raise RuntimeError(f"{self.argv[0]} not started")
        return self._popen

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit; raises ``subprocess.TimeoutExpired``."""
        return self.popen.wait(timeout)

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit code."""
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            self._popen.send_signal(signal.SIGTERM)
            try:
                self._popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()
        return self._popen.returncode

    def kill(self) -> int | None:
        """SIGKILL at once; returns the exit code (``-9`` if it was running)."""
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            self._popen.kill()
        self._popen.wait()
        self._close_log()
        return self._popen.returncode

    def wait_for_http(
        self, url: str, timeout: float = 15.0, *, status: int | None = 200
    ) -> httpx.Response:
        """:func:`wait_for_http`, failing at once with the log tail if the process exits."""
        try:
            return wait_for_http(url, timeout, status=status, alive=lambda: self.alive)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}\n--- {self.log_path} ---\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ManagedProcess:
        if self._popen is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "not started" if self._popen is None else f"pid={self.pid} alive={self.alive}"
        return f"<ManagedProcess {self.argv[0]} {state}>"
