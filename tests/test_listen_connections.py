"""`listen`'s connections are bounded: a cap, request deadlines, quiet accept errors.

Real listeners on loopback, raw sockets. Timeouts are set small; the assertions are
about what happens (closed, 408, 503, how many log lines), never how fast; the long
limits only keep a broken build from hanging.
"""

from __future__ import annotations

import asyncio
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from market_agent.audit import AuditLog
from market_agent.listen.admission import Listener
from market_agent.listen.connections import ConnectionEvents, ConnectionLimits, bounded_server
from market_agent.listen.http import WebhookApp, bind_socket
from market_agent.settings import ListenSettings
from tests.helpers import ManagedProcess, free_port
from tests.test_listen_pipeline import FakeService

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "alerts"
GOOD = (EXAMPLES / "predictor-down.json").read_bytes()
#: Long enough never to be reached by a test that expects something sooner.
HANG_GUARD = 15.0


def _protocols() -> list[object]:
    from uvicorn.protocols.http.h11_impl import H11Protocol

    found: list[object] = [pytest.param(H11Protocol, id="h11")]
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return found
    return [*found, pytest.param(HttpToolsProtocol, id="httptools")]


def webhook_request(body: bytes = GOOD, *, keep_alive: bool = True) -> bytes:
    head = (
        "POST /webhook/alerts HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        + ("" if keep_alive else "Connection: close\r\n")
        + "\r\n"
    )
    return head.encode() + body


class Served:
    """The webhook app under a bounded uvicorn server in a thread."""

    def __init__(self, tmp_path: Path, limits: ConnectionLimits, protocol: type) -> None:
        self.listener = Listener(AuditLog(tmp_path / "audit.jsonl"), FakeService())
        self.listener.start()
        app = WebhookApp(self.listener, token=None, max_body_bytes=64 * 1024)
        self.sock = bind_socket("127.0.0.1", 0)
        self.address = self.sock.getsockname()[:2]
        self.url = f"http://127.0.0.1:{self.address[1]}"
        self.server = bounded_server(
            app, limits, protocol=protocol, log_config=None, access_log=False, lifespan="off"
        )
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})
        self.thread.start()
        deadline = time.monotonic() + HANG_GUARD
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)

    def connect(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=HANG_GUARD)
        return sock

    @property
    def open_connections(self) -> int:
        return len(self.server.server_state.connections)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(HANG_GUARD)
        self.listener.stop(5)
        self.sock.close()


@pytest.fixture(params=_protocols())
def serve(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(**limits: float) -> Served:
        settings = {
            "max_connections": 100,
            "header_timeout": 0.5,
            "request_timeout": 1.0,
            "keepalive_timeout": 0.5,
            **limits,
        }
        served = Served(tmp_path, ConnectionLimits(**settings), request.param)  # type: ignore[arg-type]
        started.append(served)
        return served

    yield start
    for served in started:
        served.close()


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes; fails if it never does."""
    sock.settimeout(HANG_GUARD)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def read_response(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """One whole HTTP response (headers and `content-length` body): a single recv may
    return only part of it, and the rest would then read as the next answer."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def trickle(sock: socket.socket, data: bytes, pause: float = 0.02) -> tuple[int, bytes]:
    """Send `data` a byte at a time until the server answers or closes.

    Returns how many bytes were sent and what the server sent back (b"" when it just
    closed the connection).
    """
    for sent in range(len(data)):
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            return sent, read_until_closed(sock)
        try:
            sock.send(data[sent : sent + 1])
        except (BrokenPipeError, ConnectionResetError):
            return sent, b""
        time.sleep(pause)
    return len(data), b""


def test_an_idle_connection_is_closed_after_the_header_timeout(serve):
    served = serve(header_timeout=0.3)
    with served.connect() as sock:
        assert read_until_closed(sock) == b""  # closed, silently: nothing was asked
    assert served.open_connections == 0


def test_a_client_sending_headers_a_byte_at_a_time_is_cut_off(serve):
    served = serve(header_timeout=0.5, request_timeout=0.5)
    request = webhook_request()
    with served.connect() as sock:
        sent, answer = trickle(sock, request)  # ~0.02 s a byte: minutes for all of it
    assert sent < request.index(b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 408 ")


def test_the_whole_request_has_a_deadline_not_just_each_read(serve):
    served = serve(header_timeout=0.5, request_timeout=1.0)
    request = webhook_request()
    body_starts = request.index(b"\r\n\r\n") + 4
    with served.connect() as sock:
        sock.sendall(request[:body_starts])  # headers at once, then the body dribbles
        sent, answer = trickle(sock, request[body_starts:])
    assert sent < len(request) - body_starts
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'"reason":"request_timeout"' in answer


def test_the_next_request_on_a_kept_alive_connection_has_a_deadline_too(serve):
    served = serve(header_timeout=0.5, request_timeout=0.5, keepalive_timeout=5)
    with served.connect() as sock:
        sock.sendall(webhook_request())
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        sent, answer = trickle(sock, webhook_request())
    assert sent < len(webhook_request())
    assert answer.startswith(b"HTTP/1.1 408 ")


def test_a_kept_alive_connection_is_closed_when_idle(serve):
    served = serve(header_timeout=5, request_timeout=5, keepalive_timeout=0.3)
    with served.connect() as sock:
        sock.sendall(webhook_request())
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        assert read_until_closed(sock) == b""


def test_connections_over_the_cap_are_refused_at_once(serve):
    served = serve(max_connections=5, header_timeout=HANG_GUARD, request_timeout=HANG_GUARD)
    idle = [served.connect() for _ in range(5)]
    try:
        wait_for(lambda: served.open_connections == 5)
        for _ in range(20):
            with served.connect() as extra:
                answer = read_until_closed(extra)
            assert answer.startswith(b"HTTP/1.1 503 ")
            assert b"retry-after: 5" in answer
        assert served.open_connections == 5  # the refused ones hold nothing
    finally:
        for sock in idle:
            sock.close()
    wait_for(lambda: served.open_connections == 0)
    assert httpx.post(f"{served.url}/webhook/alerts", content=GOOD, timeout=5).status_code == 200


def test_a_normal_request_succeeds_while_slow_clients_are_connected(serve):
    served = serve(header_timeout=HANG_GUARD, request_timeout=HANG_GUARD)
    idle = [served.connect() for _ in range(30)]
    slow = [served.connect() for _ in range(30)]
    try:
        for sock in slow:
            sock.sendall(webhook_request()[:20])
        with httpx.Client(timeout=5) as client:
            for _ in range(5):
                response = client.post(f"{served.url}/webhook/alerts", content=GOOD)
                assert response.status_code == 200
                for sock in slow:
                    sock.send(b"x")
    finally:
        for sock in idle + slow:
            sock.close()


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.01)


# Settings ----------------------------------------------------------------------------


def test_limits_have_defaults_and_are_validated():
    defaults = ListenSettings()
    assert defaults.max_connections > 0
    assert 0 < defaults.header_timeout <= defaults.request_timeout
    assert defaults.keepalive_timeout > 0
    for bad in (
        {"max_connections": 0},
        {"header_timeout": 0},
        {"keepalive_timeout": -1},
        {"header_timeout": 20, "request_timeout": 10},
    ):
        with pytest.raises(ValidationError):
            ListenSettings(**bad)


# Out of descriptors -------------------------------------------------------------------

DESCRIPTOR_LIMIT = 96
#: `market-agent` with a low open-file limit it cannot raise; `{prelude}` runs first.
LIMITED = (
    "import os, resource, sys, threading, time\n"
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({DESCRIPTOR_LIMIT}, {DESCRIPTOR_LIMIT}))\n"
    "{prelude}\n"
    "sys.argv[0] = 'market-agent'\n"
    "from market_agent.cli import main\n"
    "main()\n"
)
#: What a listener without the `fast` extra runs: plain asyncio and h11 (asyncio logs
#: a traceback for every accept() that fails, unless told otherwise).
WITHOUT_FAST_EXTRA = "sys.modules['uvloop'] = sys.modules['httptools'] = None"
#: A leak elsewhere in the process: every free descriptor taken while `exhaust` exists.
LEAK = """
def leak(start, stop):
    while not os.path.exists(start):
        time.sleep(0.05)
    held = []
    try:
        while True:
            held.append(os.open('/dev/null', os.O_RDONLY))
    except OSError:
        pass
    while os.path.exists(start):
        time.sleep(0.05)
    for fd in held:
        os.close(fd)
    open(stop, 'w').close()
threading.Thread(target=leak, args=sys.argv[1:3], daemon=True).start()
del sys.argv[1:3]
"""
LOOPS = pytest.mark.parametrize(
    "loop", [WITHOUT_FAST_EXTRA, ""], ids=["asyncio-h11", "default-loop"]
)


def limited_listener(tmp_path: Path, port: int, prelude: str, *args: str) -> ManagedProcess:
    argv = [
        sys.executable, "-c", LIMITED.format(prelude=prelude), *args,
        "--audit-log", str(tmp_path / "audit.jsonl"), "listen",
        "--port", str(port), "--analysis", "threads", "--no-llm",
    ]  # fmt: skip
    env = {"MARKET_AGENT_LISTEN__MAX_CONNECTIONS": "1000"}  # more than the descriptors
    return ManagedProcess(argv, log_path=tmp_path / "listen.log", env=env)


def flood(port: int, count: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]


def log_lines(tmp_path: Path) -> list[str]:
    return (tmp_path / "listen.log").read_text(errors="replace").splitlines()


@pytest.mark.slow
@LOOPS
def test_a_cap_over_the_descriptor_limit_is_lowered_to_fit_it(tmp_path, loop):
    port = free_port()
    with limited_listener(tmp_path, port, loop) as running:
        running.wait_for_http(f"http://127.0.0.1:{port}/readyz", timeout=30)
        clients = flood(port, 3 * DESCRIPTOR_LIMIT)
        try:
            answer = read_until_closed(clients[-1])
        finally:
            for sock in clients:
                sock.close()
        running.wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=HANG_GUARD)
    assert answer.startswith(b"HTTP/1.1 503 ")  # refused by the cap: accept() never failed
    lines = log_lines(tmp_path)
    assert any("listen.max_connections is 1000" in line for line in lines)
    assert len(lines) < 20, "\n".join(lines[:40])


@pytest.mark.slow
@LOOPS
def test_accept_failures_are_summarised_and_the_listener_recovers(tmp_path, loop):
    port = free_port()
    start, stop = tmp_path / "exhaust", tmp_path / "released"
    with limited_listener(tmp_path, port, loop + "\n" + LEAK, str(start), str(stop)) as running:
        running.wait_for_http(f"http://127.0.0.1:{port}/readyz", timeout=30)
        start.touch()
        time.sleep(0.5)
        clients = flood(port, 50)  # they wait in the backlog: accept() fails, EMFILE
        time.sleep(2)
        start.unlink()
        wait_for(stop.exists)
        for sock in clients:
            sock.close()
        running.wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=HANG_GUARD)
        time.sleep(1.5)  # asyncio's retries of accept() are over before it stops
    lines = log_lines(tmp_path)
    assert len(lines) < 20, "\n".join(lines[:40])
    assert not any("Traceback" in line for line in lines)


def test_accept_retries_left_after_the_socket_closed_are_not_tracebacks() -> None:
    """Python 3.11 schedules one accept retry per EMFILE; after shutdown each would
    print a traceback through the loop's default handler."""

    def _start_serving() -> None: ...

    class Handle:
        _callback = _start_serving

    defaulted: list[dict[str, object]] = []

    async def report() -> None:
        loop = asyncio.get_running_loop()
        loop.default_exception_handler = defaulted.append  # type: ignore[method-assign]
        events = ConnectionEvents(ConnectionLimits(10, 1.0, 2.0, 1.0))
        for _ in range(3):
            events.handle_loop_exception(loop, {"exception": KeyError(7), "handle": Handle()})
        events.handle_loop_exception(loop, {"exception": KeyError(7), "handle": None})

    asyncio.run(report())
    assert len(defaulted) == 1  # only the unrelated one reaches the default handler
