"""`listen`'s HTTP side: a small raw ASGI app served by uvicorn.

Endpoints: ``POST /webhook/alerts`` (bearer token when one is configured),
``GET /healthz``, ``GET /readyz``, ``GET /metrics``. Bad input gets a 4xx with a
short JSON message (``{"error", "reason"}``), never a 500 and never exception
text; a notification that could not be journaled gets a 503 so Alertmanager
retries it. Every response body is JSON except ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import ipaddress
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from market_agent.errors import AuditError, ConfigError
from market_agent.inputs import (
    MAX_DEPTH,
    PayloadError,
    deeper_than,
    has_lone_surrogate,
    parse_payload,
)
from market_agent.listen.admission import (
    Listener,
    QueueFull,
    Remediator,
    Service,
)
from market_agent.listen.connections import ConnectionLimits, bounded_server, fit_descriptors
from market_agent.listen.journal import JournalClosed
from market_agent.listen.logs import configure_logging
from market_agent.listen.token import DEFAULT_TOKEN_FILE
from market_agent.models import Notification, new_id

if TYPE_CHECKING:
    from market_agent.analysis.run import ContextProvider
    from market_agent.audit import AuditLog
    from market_agent.listen.messages import EngineSpec
    from market_agent.settings import ListenSettings, Settings

log = logging.getLogger("market_agent.listen")

WEBHOOK_PATH = "/webhook/alerts"
TOKEN_ENV = "MARKET_AGENT_LISTEN__TOKEN"  # noqa: S105 (a variable name)
#: Longest validation message put in a 422 body.
MAX_MESSAGE = 300
RETRY_AFTER_SECONDS = b"5"
#: Longest /readyz waits for a failing journal's trial write.
PROBE_TIMEOUT_SECONDS = 1.0
TOO_DEEP_MESSAGE = f"objects and arrays nested deeper than {MAX_DEPTH} levels"
#: Allocations between collections of the youngest generation (Python's default: 700).
GC_YOUNG_THRESHOLD = 10_000

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: bytes = b"application/json"
    headers: tuple[tuple[bytes, bytes], ...] = ()

    @classmethod
    def json(cls, status: int, data: dict[str, Any], *headers: tuple[bytes, bytes]) -> Response:
        return cls(status, orjson.dumps(data), headers=headers)


class _ClientGone(Exception):
    """The client disconnected before its body was read; nobody to answer."""


class WebhookApp:
    """The ASGI application; all state lives in the `Listener` it is given."""

    def __init__(self, listener: Listener, *, token: str | None, max_body_bytes: int) -> None:
        self.listener = listener
        self.metrics = listener.metrics
        self._token = token.encode() if token else None
        self.max_body_bytes = max_body_bytes
        self._log_limit = _LogLimit()
        self.routes: dict[str, dict[str, Callable[[Scope, Receive], Awaitable[Response]]]] = {
            WEBHOOK_PATH: {"POST": self._webhook},
            "/healthz": {"GET": self._healthz},
            "/readyz": {"GET": self._readyz},
            "/metrics": {"GET": self._metrics},
        }

    @property
    def authenticates(self) -> bool:
        return self._token is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        try:
            response = await self._respond(scope, receive)
        except _ClientGone:
            return
        except Exception:  # a bug: logged with an id, never shown to the client
            error_id = new_id()[:12]
            log.exception("internal error %s on %s %s", error_id, scope["method"], scope["path"])
            response = self._reject(500, "internal", f"internal error (error id {error_id})")
        await _send(send, response)

    async def _respond(self, scope: Scope, receive: Receive) -> Response:
        methods = self.routes.get(scope["path"])
        if methods is None:
            return self._reject(404, "not_found", "no such endpoint", scope)
        handler = methods.get(scope["method"])
        if handler is None:
            allow = (b"allow", ", ".join(methods).encode())
            return self._reject(405, "method_not_allowed", "method not allowed", scope, allow)
        return await handler(scope, receive)

    async def _webhook(self, scope: Scope, receive: Receive) -> Response:
        started = time.perf_counter()
        response = await self._webhook_response(scope, receive)
        code = f"{response.status // 100}xx"
        self.metrics.webhook_seconds.labels(code).observe(time.perf_counter() - started)
        return response

    async def _webhook_response(self, scope: Scope, receive: Receive) -> Response:
        if not self._authorized(scope):
            challenge = (b"www-authenticate", b'Bearer realm="market-agent"')
            return self._reject(
                401, "unauthorized", "missing or wrong bearer token", scope, challenge
            )
        body = await _read_body(scope, receive, self.max_body_bytes)
        if body is None:
            message = f"body larger than {self.max_body_bytes} bytes"
            return self._reject(413, "too_large", message, scope, (b"connection", b"close"))
        try:
            value = _loads(body)
        except _TooDeep:
            return self._reject(422, "invalid", TOO_DEEP_MESSAGE, scope)
        except ValueError:
            return self._reject(400, "bad_json", "body is not valid JSON (UTF-8)", scope)
        if _too_deep(body, value):
            return self._reject(422, "invalid", TOO_DEEP_MESSAGE, scope)
        if not isinstance(value, dict):
            message = "expected a JSON object (an Alertmanager webhook notification)"
            return self._reject(422, "invalid", message, scope)
        try:
            notification = parse_payload(value)
        except PayloadError as exc:
            return self._reject(422, "invalid", str(exc)[:MAX_MESSAGE], scope)
        return await self._admit(notification, value, scope)

    async def _admit(
        self, notification: Notification, payload: dict[str, Any], scope: Scope
    ) -> Response:
        retry = (b"retry-after", RETRY_AFTER_SECONDS)
        try:
            admission = await self.listener.admit(notification, payload)
        except QueueFull:
            return self._reject(
                503, "queue_full", "analysis queue is full; retry later", scope, retry
            )
        except (AuditError, JournalClosed) as exc:
            error_id = new_id()[:12]
            log.error("notification not journaled (error id %s): %s", error_id, exc)
            message = f"could not journal the notification; retry later (error id {error_id})"
            return self._reject(503, "journal_error", message, scope, retry)
        return Response.json(200, {"status": admission.status, "id": admission.notification_id})

    def _authorized(self, scope: Scope) -> bool:
        if self._token is None:
            return True
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    credentials.strip(), self._token
                )
        return False

    async def _healthz(self, scope: Scope, receive: Receive) -> Response:
        return Response.json(200, {"status": "ok"})

    async def _readyz(self, scope: Scope, receive: Receive) -> Response:
        """Ready, or 503 with the reason (README, "listen"); a failing journal is tried
        again first, so that it turns ready once it can write, even with nothing to do."""
        probe = self.listener.probe_journal()
        if probe is not None:
            with contextlib.suppress(Exception):  # still failing: the reason says so
                await asyncio.wait_for(asyncio.wrap_future(probe), PROBE_TIMEOUT_SECONDS)
        reason = self.listener.readiness()
        depth = self.listener.depth
        if reason is None:
            return Response.json(200, {"status": "ready", "queue_depth": depth})
        return Response.json(503, {"status": "not ready", "reason": reason, "queue_depth": depth})

    async def _metrics(self, scope: Scope, receive: Receive) -> Response:
        body = self.metrics.exposition()
        return Response(200, body, content_type=self.metrics.content_type.encode())

    def _reject(
        self,
        status: int,
        reason: str,
        message: str,
        scope: Scope | None = None,
        *headers: tuple[bytes, bytes],
    ) -> Response:
        self.metrics.rejected.labels(reason).inc()
        suppressed = self._log_limit.allow(reason)
        if scope is not None and suppressed is not None:
            client = scope.get("client") or ("-", 0)
            log.warning(
                "rejected %s %s from %s: %d %s%s",
                scope["method"],
                json.dumps(scope["path"]),
                client[0],
                status,
                reason,
                f" ({suppressed} more since the last line)" if suppressed else "",
            )
        return Response.json(status, {"error": message, "reason": reason}, *headers)


class _LogLimit:
    """At most one log line per second per key, so a flood cannot burn the CPU on logs."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str) -> int | None:
        """None: stay quiet; else log now, mentioning this many suppressed lines."""
        now = time.monotonic()
        if now - self._last.get(key, -self.interval) < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)


class _TooDeep(Exception):
    """The body nests objects and arrays deeper than a parser goes."""


def _loads(body: bytes) -> Any:
    """Decode a JSON body: orjson when it can, the standard library for what orjson refuses
    (a BOM, UTF-16/32, NaN, integers beyond 64 bits), so the same bodies are accepted;
    except invalid Unicode (lone surrogates), which nothing downstream can write. Raises
    ValueError for what is not JSON, `_TooDeep` for what no parser goes deep enough into.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):
            raise _TooDeep from None
    try:
        value = json.loads(body)
    except RecursionError:
        raise _TooDeep from None
    if has_lone_surrogate(value):
        raise ValueError("a lone surrogate: not Unicode text")
    return value


def _too_deep(body: bytes, value: Any) -> bool:
    """Deeper than MAX_DEPTH; walked only when the body has enough brackets to be
    (every object and array opens with one: a cheap upper bound on the depth)."""
    if body.count(b"[") + body.count(b"{") <= MAX_DEPTH:
        return False
    return deeper_than(value, MAX_DEPTH)


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The request body, or None when it is larger than `limit` bytes."""
    for name, value in scope["headers"]:
        if name == b"content-length" and (not value.isdigit() or int(value) > limit):
            return None
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send(send: Send, response: Response) -> None:
    headers = [
        (b"content-type", response.content_type),
        (b"content-length", str(len(response.body)).encode()),
        *response.headers,
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


# Running ------------------------------------------------------------------------


def check_auth(settings: ListenSettings) -> str | None:
    """The bearer token; refuses a non-loopback bind without one unless told it is fine.

    Without a token it always warns: on loopback any local user or process can post.
    """
    token = settings.resolved_token()
    if token is not None and not token:
        raise ConfigError("listen: the token is empty (check listen.token / --token-file)")
    if token is None and not is_loopback(settings.host):
        if not settings.insecure_no_auth:
            raise ConfigError(
                f"listen: refusing to serve on non-loopback address {settings.host} without a "
                "token; set listen.token / --token-file (or --insecure-no-auth to accept this)"
            )
        log.warning(
            "serving on %s WITHOUT authentication (--insecure-no-auth): anyone who can reach "
            "this address can post alerts",
            settings.host,
        )
    elif token is None:
        log.warning(
            "authentication is OFF: any local user or process can post alerts to %s; "
            "create a token with `market-agent listen --init-token` and start with "
            "--token-file %s",
            settings.host,
            settings.token_file or DEFAULT_TOKEN_FILE,
        )
    return token


def auth_mode(settings: ListenSettings, environ: Mapping[str, str] = os.environ) -> str:
    """Where the bearer token comes from, for the start-up line (never the token)."""
    if settings.token_file is not None:
        return f"bearer token from file {settings.token_file}"
    if settings.token is not None:
        if TOKEN_ENV in environ:
            return f"bearer token from ${TOKEN_ENV}"
        return "bearer token from listen.token (config file)"
    return "none, every request is accepted"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind before serving, so a busy port is a clear error rather than uvicorn's exit(1)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"listen: cannot resolve {host}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"listen: cannot listen on {host}:{port}: {exc.strerror or exc} "
            "(is another listener running? use --port)"
        ) from None
    return sock


def run_listener(
    settings: Settings,
    audit: AuditLog | None,
    service: Service | None,
    *,
    context_for: ContextProvider | None = None,
    remediator: Remediator | None = None,
    engine: EngineSpec | None = None,
) -> int:
    """`market-agent listen`: recover, serve until SIGTERM/SIGINT, drain, stop.

    Analysis runs with `service`, `context_for` and `remediator` on threads here, or,
    given an `engine`, in a process of its own that builds them from its settings.
    Returns how many acknowledged notifications were left unanalysed when the grace
    period ran out (journaled, so analysed at the next start).
    """
    options = settings.listen
    configure_logging(options.log_format, options.log_level)
    if audit is None:
        raise ConfigError(
            "listen needs the audit log: it is the journal that makes acknowledgements "
            "durable (drop --no-audit, or set audit.enabled = true)"
        )
    if not settings.audit.fsync:
        log.warning("audit.fsync is off: acknowledged notifications may be lost on power loss")
    token = check_auth(options)
    sock = bind_socket(options.host, options.port)
    listener = Listener(
        audit,
        service,
        queue_size=options.queue_size,
        workers=options.workers,
        context_for=context_for,
        remediator=remediator,
        engine=engine,
        stall_seconds=options.stall_seconds,
    )
    try:
        recovery = listener.start()
    except BaseException:
        sock.close()
        raise
    log.info("audit log %s: %s", audit.path, recovery)
    app = WebhookApp(listener, token=token, max_body_bytes=options.max_body_bytes)
    _settle_garbage_collector()
    limits = ConnectionLimits.from_settings(options)
    return serve(
        app, sock, grace_period=options.grace_period, limits=limits, auth=auth_mode(options)
    )


def _settle_garbage_collector() -> None:
    """Keep what start-up made (modules, rule tables, the dedup index) out of collections.

    Every request allocates thousands of short-lived containers: with the default
    thresholds the collector ran every few requests, and its full passes over all
    those long-lived objects took tens of milliseconds each (p99 latency).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def serve(
    app: WebhookApp,
    sock: socket.socket,
    *,
    grace_period: float,
    limits: ConnectionLimits,
    auth: str | None = None,
) -> int:
    """Serve on a bound socket until SIGTERM/SIGINT, then drain for the grace period.

    Connections are bounded by `limits`. The app's listener must be started; it is
    stopped here. `auth` says how requests are authenticated, for the start-up line.
    """
    limits = fit_descriptors(limits)
    server = bounded_server(
        app,
        limits,
        log_config=None,
        access_log=False,
        lifespan="off",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=max(1, round(grace_period)),
    )
    host, port = sock.getsockname()[:2]
    auth = auth or ("bearer token" if app.authenticates else "none")
    log.info("listening on http://%s:%d%s; auth: %s", _url_host(host), port, WEBHOOK_PATH, auth)
    left: int | None = None
    with _DrainSignals() as guard:
        try:
            server.run(sockets=[sock])
            guard.draining = True
            log.info("draining the analysis queue (up to %g s)", grace_period)
            left = app.listener.stop(grace_period, guard.abort)
        finally:
            if left is None:  # uvicorn failed: still commit what was acknowledged
                app.listener.stop(0)
            sock.close()
    if left:
        log.warning("%d notifications left unanalysed; they are analysed at the next start", left)
    log.info("stopped")
    return left or 0


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class _DrainSignals:
    """SIGINT/SIGTERM handling around uvicorn (main thread only).

    uvicorn handles the first signal (graceful shutdown) and re-raises it when it
    returns: that one is swallowed here so the queue can drain and the process exit
    0; a signal during the drain cuts it short.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> _DrainSignals:
        self.abort = threading.Event()
        self.draining = False
        self.saved: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            self.saved = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.draining:
            log.warning("signal %d during the drain: stopping now", signum)
            self.abort.set()

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
