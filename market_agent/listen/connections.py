"""Bounds on `listen`'s HTTP connections: a cap, request deadlines, quiet accept errors.

uvicorn alone holds a connection that never sends a complete request forever: its
keep-alive timer runs only between requests, and `limit_concurrency` answers 503 only
once a request's headers are in. `bounded_protocol` adds to uvicorn's HTTP protocol
class (httptools or h11, whichever uvicorn picks):

- a cap on open connections: one over it is answered a 503 and closed at once;
- a deadline for each request, counted from its first byte (or from the connection's
  start): headers within `header_timeout`, the whole body within `request_timeout`,
  however the bytes trickle in; then 408 (or a silent close if nothing came) and close;
- uvicorn's keep-alive timer, set to `keepalive_timeout`, between requests.

`bounded_server`'s event loop summarises accept failures (EMFILE and the like): one
log line per interval with a count, where asyncio logs a traceback for every attempt.
`fit_descriptors` makes the cap and the open-file limit agree, so that the cap, not a
failing accept(), is what refuses connections.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    import uvicorn

    from market_agent.settings import ListenSettings

log = logging.getLogger("market_agent.listen")

#: Descriptors kept for everything but connections: the audit log and its lock, the
#: analysis process's pipes, the event loop, clients of Prometheus and the LLM.
RESERVED_DESCRIPTORS = 64
#: Seconds between summary lines about refused, timed-out or failed connections.
SUMMARY_INTERVAL = 10.0
#: accept() failures that mean "out of a resource", not "this one connection failed".
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


# Request phases, as far as the deadline is concerned.
_HEADERS = "headers"
_BODY = "body"
_BUSY = "busy"  # the previous request is still being answered; new bytes wait for it
_RECEIVED = "received"


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int
    header_timeout: float
    request_timeout: float
    keepalive_timeout: float

    @classmethod
    def from_settings(cls, settings: ListenSettings) -> ConnectionLimits:
        return cls(
            max_connections=settings.max_connections,
            header_timeout=settings.header_timeout,
            request_timeout=settings.request_timeout,
            keepalive_timeout=settings.keepalive_timeout,
        )


def _canned(status: bytes, reason: str, message: str, *headers: bytes) -> bytes:
    """A whole HTTP/1.1 response that closes the connection, in the app's JSON style."""
    body = orjson.dumps({"error": message, "reason": reason})
    head = [b"HTTP/1.1 " + status, b"content-type: application/json", b"connection: close"]
    head += [*headers, b"content-length: " + str(len(body)).encode()]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


OVER_CAPACITY = _canned(
    b"503 Service Unavailable",
    "too_many_connections",
    "too many open connections; retry later",
    b"retry-after: 5",
)
REQUEST_TIMEOUT = _canned(
    b"408 Request Timeout", "request_timeout", "the request did not arrive in time"
)


class EventSummary:
    """Counts events of a kind and logs the first at once, then at most one line per
    interval with how many came meanwhile, so a storm costs a few lines, not one each."""

    def __init__(self, level: int, interval: float = SUMMARY_INTERVAL) -> None:
        self.level = level
        self.interval = interval
        self._pending: dict[str, int] = {}
        self._flushing: set[str] = set()

    def note(self, message: str) -> None:
        if message in self._flushing:
            self._pending[message] = self._pending.get(message, 0) + 1
            return
        log.log(self.level, "%s", message)
        self._flushing.add(message)
        asyncio.get_running_loop().call_later(self.interval, self._flush, message)

    def _flush(self, message: str) -> None:
        count = self._pending.pop(message, 0)
        if not count:
            self._flushing.discard(message)
            return
        log.log(self.level, "%s (%d times in the last %g s)", message, count, self.interval)
        asyncio.get_running_loop().call_later(self.interval, self._flush, message)


class ConnectionEvents:
    """What the guarded connections of one server report, summarised."""

    def __init__(self, limits: ConnectionLimits, interval: float = SUMMARY_INTERVAL) -> None:
        self.limits = limits
        self.warnings = EventSummary(logging.WARNING, interval)
        self.timeouts = EventSummary(logging.INFO, interval)

    def refused(self) -> None:
        cap = self.limits.max_connections
        self.warnings.note(f"refused a connection: {cap} already open (listen.max_connections)")

    def timed_out(self, phase: str, received: bool) -> None:
        setting = "header_timeout" if phase is _HEADERS else "request_timeout"
        seconds = getattr(self.limits, setting)
        if not received:
            what = "no request"
        else:
            what = "request headers incomplete" if phase is _HEADERS else "request incomplete"
        self.timeouts.note(f"closed a connection: {what} after {seconds:g} s (listen.{setting})")

    def handle_loop_exception(
        self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]
    ) -> None:
        """The loop's exception handler: accept failures summarised, the rest as usual."""
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
            what = context.get("message", "socket error")
            self.warnings.note(f"{what}: {exc.strerror or exc}; new connections wait or fail")
            return
        if _is_late_accept_retry(context):
            self.timeouts.note("accept retries left over from a descriptor shortage: ignored")
            return
        loop.default_exception_handler(context)


def _is_late_accept_retry(context: dict[str, Any]) -> bool:
    """An accept retry that asyncio scheduled after an EMFILE and that ran once the
    listening socket was closed (Python 3.11 schedules one per failed accept: at shutdown
    each would print a traceback). Harmless: there is nothing left to accept on."""
    callback = getattr(context.get("handle"), "_callback", None)
    return getattr(callback, "__name__", "") == "_start_serving" and isinstance(
        context.get("exception"), KeyError | ValueError | OSError
    )


class _Bounded:
    """Mixed in before uvicorn's HttpToolsProtocol or H11Protocol (see `bounded_protocol`).

    Relies on what both keep: `connections` (the server's open connections), `transport`,
    `loop`, and `cycle` (the latest request, with `more_body` and `response_complete`).
    """

    limits: ConnectionLimits
    events: ConnectionEvents
    # uvicorn's attributes, for the type checker:
    connections: set[Any]
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    cycle: Any

    _refused = False
    _deadline: asyncio.TimerHandle | None = None
    _started = 0.0
    _in_body = False
    _cycle_at_start: Any = None
    _received = False

    def connection_made(self, transport: asyncio.Transport) -> None:
        if len(self.connections) >= self.limits.max_connections:
            self._refused = True
            transport.write(OVER_CAPACITY)
            _close(transport)
            self.events.refused()
            return
        super().connection_made(transport)  # type: ignore[misc]
        self._start_deadline(received=False)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._cancel_deadline()
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._deadline is None:
            self._start_deadline(received=True)
        else:
            self._received = True
        super().data_received(data)  # type: ignore[misc]
        if self._deadline is not None:
            self._follow(self._phase())

    def _phase(self) -> str:
        cycle = self.cycle
        if cycle is None:
            return _HEADERS
        if cycle.more_body:
            return _BODY
        if cycle is not self._cycle_at_start:
            return _RECEIVED
        return _HEADERS if cycle.response_complete else _BUSY

    def _start_deadline(self, *, received: bool) -> None:
        self._started = self.loop.time()
        self._cycle_at_start = self.cycle
        self._in_body = False
        self._received = received
        self._deadline = self.loop.call_at(self._started + self.limits.header_timeout, self._expire)

    def _follow(self, phase: str) -> None:
        if phase is _RECEIVED:
            self._cancel_deadline()
        elif phase is _BODY and not self._in_body:
            self._in_body = True
            self._cancel_deadline()
            self._deadline = self.loop.call_at(
                self._started + self.limits.request_timeout, self._expire
            )

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        phase = self._phase()
        if phase is _BUSY:  # our slowness, not the client's: count from now
            self._start_deadline(received=True)
        elif phase is _RECEIVED or (phase is _BODY and not self._in_body):
            self._follow(phase)  # got there by a path that bypassed data_received
        elif not self.transport.is_closing():
            self.events.timed_out(phase, self._received)
            if self._received:
                self.transport.write(REQUEST_TIMEOUT)
            _close(self.transport)


def _close(transport: asyncio.BaseTransport) -> None:
    """Close without waiting on a client that does not read what it is sent."""
    if isinstance(transport, asyncio.WriteTransport) and transport.get_write_buffer_size():
        transport.abort()
    else:
        transport.close()


def bounded_protocol(
    base: type[asyncio.Protocol], limits: ConnectionLimits, events: ConnectionEvents
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class `base`, bounded by `limits`."""
    namespace = {"limits": limits, "events": events}
    return type(f"Bounded{base.__name__}", (_Bounded, base), namespace)


def bounded_server(
    app: Any,
    limits: ConnectionLimits,
    *,
    protocol: type[asyncio.Protocol] | None = None,
    **options: Any,
) -> uvicorn.Server:
    """A uvicorn server for `app` whose connections are bounded by `limits`.

    Its HTTP protocol is `protocol`, or the one uvicorn would pick (httptools when
    installed, else h11), bounded; its event loop summarises accept failures.
    `options` go to `uvicorn.Config`.
    """
    import uvicorn
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    events = ConnectionEvents(limits)

    class BoundedServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            asyncio.get_running_loop().set_exception_handler(events.handle_loop_exception)
            await super().startup(sockets)

    config = uvicorn.Config(
        app,
        http=bounded_protocol(protocol or AutoHTTPProtocol, limits, events),
        timeout_keep_alive=limits.keepalive_timeout,  # type: ignore[arg-type]
        **options,
    )
    return BoundedServer(config)


def fit_descriptors(limits: ConnectionLimits) -> ConnectionLimits:
    """`limits` once the open-file limit fits its cap: the soft limit is raised if it can
    be, else the cap is lowered to fit, so that over the cap a connection is refused
    with a 503 rather than failing accept() (EMFILE) with nothing said to the client."""
    needed = limits.max_connections + RESERVED_DESCRIPTORS
    available = _raise_open_file_limit(needed)
    if available >= needed:
        return limits
    cap = max(1, available - RESERVED_DESCRIPTORS)
    log.warning(
        "listen.max_connections is %d but the open-file limit is %d (ulimit -n; "
        "LimitNOFILE= under systemd): serving at most %d connections",
        limits.max_connections,
        available,
        cap,
    )
    return replace(limits, max_connections=cap)


def _raise_open_file_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards `wanted` (never past the hard limit)."""
    try:
        import resource
    except ImportError:  # not on Unix: nothing to fit
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return wanted
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target
