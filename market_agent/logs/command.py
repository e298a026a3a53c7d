"""Running a log reader (journalctl, docker, kubectl): argv without a shell, a timeout,
a minimal environment, output kept to its last `max_bytes`."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from typing import IO

from market_agent.logs.base import FailureKind, LogSourceError
from market_agent.redact import redact_text

#: Environment variables passed to the readers; everything else is dropped.
PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "KUBECONFIG", "DOCKER_HOST", "XDG_RUNTIME_DIR")

_KIND_SIGNS: tuple[tuple[FailureKind, tuple[str, ...]], ...] = (
    ("permission", ("permission denied", "forbidden", "not authorized", "unauthorized")),
    ("not_found", ("no such", "not found", "no journal files", "does not exist")),
    ("unreachable", ("cannot connect", "connection refused", "unable to connect", "dial ")),
)


def run_reader(
    argv: Sequence[str],
    *,
    timeout: float,
    max_bytes: int,
    merge_stderr: bool = False,
    newest_first: bool = False,
) -> str:
    """The reader's output (the last `max_bytes`, whole lines; the first with
    `newest_first`); `LogSourceError` if it cannot run, times out or fails.
    `merge_stderr`: the log is on both streams (docker)."""
    env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            process = subprocess.Popen(
                list(argv),
                shell=False,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out if merge_stderr else err,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            kind: FailureKind = "not_found" if isinstance(exc, FileNotFoundError) else "error"
            raise LogSourceError(f"cannot run {argv[0]!r}: {exc.strerror or exc}", kind) from None
        try:
            code = _wait(process, timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise LogSourceError(
                f"{argv[0]} gave no answer within {timeout:g} s", "timeout"
            ) from None
        if code != 0:
            detail = _last_line(out if merge_stderr else err)
            raise LogSourceError(f"{argv[0]} exited {code}: {detail}", _kind(detail))
        return _head(out, max_bytes) if newest_first else _tail(out, max_bytes)


def _wait(process: subprocess.Popen[bytes], timeout: float) -> int:
    """The exit code as soon as the reader ends, `TimeoutExpired` after `timeout` s.

    `Popen.wait(timeout)` polls, sleeping up to 50 ms past the end (a third of a
    journalctl read); a pidfd wakes us when the process exits (Linux >= 5.3).
    """
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):
        return process.wait(timeout)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        ended = poller.poll(timeout * 1000)
    finally:
        os.close(pidfd)
    if not ended:
        raise subprocess.TimeoutExpired(process.args, timeout)
    return process.wait()


def _head(handle: IO[bytes], max_bytes: int) -> str:
    handle.seek(0)
    data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:  # the last line is cut: drop it
        data = data[: data.rfind(b"\n", 0, max_bytes) + 1]
    return data.decode("utf-8", "replace")


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _tail(handle: IO[bytes], max_bytes: int) -> str:
    size = handle.seek(0, os.SEEK_END)
    handle.seek(max(0, size - max_bytes))
    data = handle.read()
    if size > max_bytes:  # the first line is cut: drop it
        data = data[data.find(b"\n") + 1 :]
    return data.decode("utf-8", "replace")


def _last_line(handle: IO[bytes]) -> str:
    lines = [line for line in _tail(handle, 4096).splitlines() if line.strip()]
    return redact_text(lines[-1].strip())[:300] if lines else "no error message"


def _kind(detail: str) -> FailureKind:
    lowered = detail.lower()
    for kind, signs in _KIND_SIGNS:
        if any(sign in lowered for sign in signs):
            return kind
    return "error"
