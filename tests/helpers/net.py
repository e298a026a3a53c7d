"""Loopback ports and polling."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

import httpx

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    probe: Callable[[], T | None],
    timeout: float,
    *,
    interval: float = 0.1,
    message: str = "condition",
) -> T:
    """Call ``probe`` until it returns something truthy; return it or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{message} not met within {timeout:g}s")
        time.sleep(interval)


def wait_for_http(
    url: str,
    timeout: float = 15.0,
    *,
    status: int | None = 200,
    alive: Callable[[], bool] | None = None,
) -> httpx.Response:
    """Poll ``url`` with GET until it answers ``status`` (any status if None).

    ``alive`` (e.g. ``ManagedProcess.alive_check``) lets the wait fail at once
    with RuntimeError when the server process has died instead of timing out.
    """
    deadline = time.monotonic() + timeout
    last: str = "no attempt"
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError(f"server exited while waiting for {url} (last: {last})")
        try:
            response = httpx.get(url, timeout=2.0)
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if status is None or response.status_code == status:
                return response
            last = f"HTTP {response.status_code}"
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready within {timeout:g}s (last: {last})")
