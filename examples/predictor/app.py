"""Demo Market Predictor: a raw ASGI service with Prometheus metrics and fault injection.

Run it with ``python -m examples.predictor --port 8000`` (or ``python
examples/predictor/app.py --port 8000``). Only the standard library,
prometheus-client and uvicorn are used; see README.md beside this file for the
endpoints, fault kinds and the health policy.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import logging.handlers
import mmap
import os
import random
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

VERSION = "1.4.2"
MODEL_NAME = "momentum-gbm"
MODEL_VERSION = "2026.11.0"
SYMBOLS = ("AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "TSLA")
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BASELINE_ACCURACY = 0.9
ACCURACY_WINDOW = 100
LEAK_CHUNK_BYTES = 1 << 20
LEAK_CAP_MB = 200
MAX_BODY_BYTES = 64 * 1024
MAX_IN_FLIGHT = 1000
SYMBOL_RE = re.compile(r"^[A-Z][A-Z0-9.\-]{0,9}$")
#: The market-data vendor the feed fetches from (the `feed_down` fault refuses it).
FEED_VENDOR = "marketdata.vendor.example:443"
#: A prediction slower than this logs a warning (the `latency` fault: a slow model).
SLOW_PREDICTION_SECONDS = 0.5
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FILE_MAX_BYTES = 10 * 2**20

log = logging.getLogger("predictor")

# kind -> {param: (default, minimum, maximum)}
FAULT_PARAMS: dict[str, dict[str, tuple[float, float, float]]] = {
    "latency": {"seconds": (1.5, 0.0, 10.0)},
    "errors": {"rate": (0.5, 0.0, 1.0)},
    "stale_data": {"lag_seconds": (0.0, 0.0, 7 * 86400.0)},
    "accuracy_drop": {"accuracy": (0.5, 0.0, 1.0)},
    "memory_leak": {"mb_per_second": (0.25, 0.01, 200.0), "max_mb": (200.0, 1.0, LEAK_CAP_MB)},
    "crash": {"exit_code": (1, 1, 255), "delay_seconds": (0.2, 0.0, 10.0)},
    "out_of_memory": {"rate": (1.0, 0.0, 1.0)},
    "feed_down": {"lag_seconds": (0.0, 0.0, 7 * 86400.0)},
}
FAULT_KINDS = tuple(FAULT_PARAMS)


class BadRequest(ValueError):
    """A client error: becomes a 400 with ``{"error": message}``."""


def rfc3339(timestamp: float) -> str:
    """Format a Unix timestamp as RFC 3339 UTC with milliseconds."""
    text = datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def read_rss_bytes() -> float:
    """Resident set size of this process, from /proc (peak RSS where /proc is missing)."""
    try:
        fields = Path("/proc/self/statm").read_text().split()
        return float(int(fields[1]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, IndexError, ValueError):
        import resource

        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


@dataclass(frozen=True)
class Settings:
    """Command-line settings of the demo service."""

    host: str = "127.0.0.1"
    port: int = 8000
    traffic_rps: float = 20.0
    admin_token: str | None = None
    start_faults: tuple[str, ...] = ()
    stale_after_seconds: float = 300.0
    memory_threshold_mb: float = 200.0
    seed: int | None = None
    log_level: str = "info"
    log_file: Path | None = None


@dataclass(frozen=True)
class Fault:
    """An active fault: its kind, validated parameters and when it was injected."""

    kind: str
    params: dict[str, float]
    since: float

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "params": self.params, "since": rfc3339(self.since)}


def parse_fault(body: Any, now: float) -> Fault:
    """Validate a ``POST /admin/fault`` body into a :class:`Fault`."""
    if not isinstance(body, dict):
        raise BadRequest('body must be a JSON object like {"kind": "latency"}')
    kind = body.get("kind")
    if kind not in FAULT_PARAMS:
        raise BadRequest(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
    specs = FAULT_PARAMS[kind]
    unknown = sorted(set(body) - {"kind"} - set(specs))
    if unknown:
        raise BadRequest(f"unknown parameter(s) for {kind}: {', '.join(unknown)}")
    params = {name: _fault_param(kind, name, body.get(name), spec) for name, spec in specs.items()}
    return Fault(kind=kind, params=params, since=now)


def _fault_param(kind: str, name: str, value: Any, spec: tuple[float, float, float]) -> float:
    default, low, high = spec
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{kind}.{name} must be a number")
    if not low <= value <= high:
        raise BadRequest(f"{kind}.{name} must be between {low:g} and {high:g}")
    return value


class Metrics:
    """The service's own Prometheus registry (metric names are a contract)."""

    def __init__(self, state: PredictorState) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        r = self.registry
        self.requests = Counter(
            "market_predictor_prediction_requests",
            "Prediction requests by HTTP status code.",
            ["code"],
            registry=r,
        )
        self.duration = Histogram(
            "market_predictor_request_duration_seconds",
            "Prediction request duration in seconds.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.errors = Counter("market_predictor_errors", "Errors by kind.", ["kind"], registry=r)
        self.last_prediction = Gauge(
            "market_predictor_last_prediction_timestamp_seconds",
            "Unix time of the last successful prediction.",
            registry=r,
        )
        self._callback_gauges(state)
        self._static_gauges(state)
        for code in ("200", "400", "500"):
            self.requests.labels(code=code)
        for kind in ("model_backend", "bad_request", "internal"):
            self.errors.labels(kind=kind)

    def _callback_gauges(self, state: PredictorState) -> None:
        r = self.registry
        Gauge(
            "market_predictor_feed_lag_seconds",
            "Seconds since the last market data update.",
            registry=r,
        ).set_function(state.feed_lag_seconds)
        Gauge(
            "market_predictor_model_accuracy",
            f"Rolling accuracy of the last {ACCURACY_WINDOW} predictions (0..1).",
            registry=r,
        ).set_function(state.accuracy)
        Gauge(
            "market_predictor_memory_bytes", "Resident memory of the process.", registry=r
        ).set_function(read_rss_bytes)

    def _static_gauges(self, state: PredictorState) -> None:
        r = self.registry
        info = Gauge(
            "market_predictor_info",
            "Build information (always 1).",
            ["version", "model", "model_version"],
            registry=r,
        )
        info.labels(version=VERSION, model=MODEL_NAME, model_version=MODEL_VERSION).set(1)
        Gauge(
            "market_predictor_start_time_seconds", "Unix time the service started.", registry=r
        ).set(state.started_at)

    def observe(self, code: int, seconds: float) -> None:
        self.requests.labels(code=str(code)).inc()
        self.duration.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass
class Response:
    """An HTTP response; ``after`` runs once the body has been sent."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    after: Callable[[], None] | None = None

    @classmethod
    def json(cls, status: int, payload: Any, **kwargs: Any) -> Response:
        return cls(status, json.dumps(payload).encode() + b"\n", **kwargs)

    async def send(self, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        headers = [
            (b"content-type", self.content_type.encode()),
            (b"content-length", str(len(self.body)).encode()),
            *self.headers,
        ]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def error(status: int, message: str, **kwargs: Any) -> Response:
    return Response.json(status, {"error": message}, **kwargs)


class PredictorState:
    """Everything the service simulates: faults, market feed, accuracy and leaked memory."""

    def __init__(self, settings: Settings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.rng = rng or random.Random(settings.seed)
        self.started_at = time.time()
        self.faults: dict[str, Fault] = {}
        self.feed_updated_at = self.started_at
        self.outcomes: deque[bool] = deque(
            (i % 10 != 0 for i in range(ACCURACY_WINDOW)), maxlen=ACCURACY_WINDOW
        )
        self.leaked: list[mmap.mmap] = []
        self.metrics = Metrics(self)

    # -- signals ---------------------------------------------------------------
    def feed_lag_seconds(self) -> float:
        return max(0.0, time.time() - self.feed_updated_at)

    def accuracy(self) -> float:
        return sum(self.outcomes) / len(self.outcomes)

    def leaked_bytes(self) -> int:
        return len(self.leaked) * LEAK_CHUNK_BYTES

    def health_reasons(self) -> list[str]:
        """Why /health is failing: model backend, market data freshness, memory."""
        reasons = []
        if "errors" in self.faults:
            rate = self.faults["errors"].params["rate"]
            reasons.append(f"model backend failing ({rate:.0%} of predictions error)")
        if "out_of_memory" in self.faults:
            reasons.append("model backend out of memory (MemoryError)")
        lag, stale_after = self.feed_lag_seconds(), self.settings.stale_after_seconds
        if lag > stale_after:
            reasons.append(f"market data stale: feed lag {lag:.0f}s > {stale_after:g}s")
        rss_mb, limit_mb = read_rss_bytes() / 2**20, self.settings.memory_threshold_mb
        if rss_mb > limit_mb:
            reasons.append(f"memory {rss_mb:.0f} MiB > {limit_mb:g} MiB")
        return reasons

    # -- faults ----------------------------------------------------------------
    def inject(self, fault: Fault) -> None:
        self.faults[fault.kind] = fault
        if fault.kind in ("stale_data", "feed_down"):
            self.feed_updated_at = fault.since - fault.params["lag_seconds"]
        log.warning("fault injected: %s %s", fault.kind, fault.params)

    def recover(self) -> list[str]:
        cleared = sorted(self.faults)
        self.faults.clear()
        self.feed_updated_at = time.time()
        self.release_leak()
        log.warning("recovered; cleared faults: %s", ", ".join(cleared) or "none")
        return cleared

    def release_leak(self) -> None:
        for chunk in self.leaked:
            chunk.close()
        self.leaked.clear()

    # -- work ------------------------------------------------------------------
    async def predict(self, symbol: str) -> tuple[int, dict[str, Any]]:
        """Make one (fake) prediction; records metrics whatever the outcome."""
        started = time.perf_counter()
        status, body = await self._predict(symbol)
        self.metrics.observe(status, time.perf_counter() - started)
        return status, body

    async def _predict(self, symbol: str) -> tuple[int, dict[str, Any]]:
        latency = self.faults.get("latency")
        delay = latency.params["seconds"] if latency else self.rng.lognormvariate(-3.5, 0.5)
        await asyncio.sleep(delay * self.rng.uniform(0.9, 1.1))
        if latency and delay > SLOW_PREDICTION_SECONDS:
            log.warning(
                "model inference slow: %.2fs for symbol=%r (budget %.2fs)",
                delay,
                symbol,
                SLOW_PREDICTION_SECONDS,
            )
        errors = self.faults.get("errors")
        if errors and self.rng.random() < errors.params["rate"]:
            self.metrics.errors.labels(kind="model_backend").inc()
            log.error("model backend error for symbol=%r (injected fault)", symbol)
            return 500, {"error": "model backend error (injected fault)"}
        oom = self.faults.get("out_of_memory")
        if oom and self.rng.random() < oom.params["rate"]:
            try:
                build_feature_matrix(symbol)
            except MemoryError:
                self.metrics.errors.labels(kind="model_backend").inc()
                log.exception("prediction failed for symbol=%r", symbol)
                return 500, {"error": "model backend out of memory"}
        drop = self.faults.get("accuracy_drop")
        hit_rate = drop.params["accuracy"] if drop else BASELINE_ACCURACY
        self.outcomes.append(self.rng.random() < hit_rate)
        now = time.time()
        self.metrics.last_prediction.set(now)
        return 200, self._prediction_body(symbol, now)

    def _prediction_body(self, symbol: str, now: float) -> dict[str, Any]:
        return {
            "symbol": symbol,
            "direction": self.rng.choice(("up", "down")),
            "confidence": round(self.rng.uniform(0.5, 0.95), 3),
            "horizon_minutes": 15,
            "model": {"name": MODEL_NAME, "version": MODEL_VERSION},
            "market_data_age_seconds": round(self.feed_lag_seconds(), 3),
            "as_of": rfc3339(now),
        }

    def grow_leak(self, elapsed: float) -> None:
        """Allocate (and touch) memory up to the leak's target for ``elapsed`` seconds."""
        fault = self.faults.get("memory_leak")
        if fault is None:
            return
        target_mb = min(
            fault.params["max_mb"], LEAK_CAP_MB, elapsed * fault.params["mb_per_second"]
        )
        pattern = b"\xa5" * LEAK_CHUNK_BYTES
        while self.leaked_bytes() < target_mb * 2**20:
            chunk = mmap.mmap(-1, LEAK_CHUNK_BYTES)
            chunk.write(pattern)
            self.leaked.append(chunk)

    def status(self) -> dict[str, Any]:
        now = time.time()
        return {
            "service": "market-predictor",
            "version": VERSION,
            "started_at": rfc3339(self.started_at),
            "uptime_seconds": round(now - self.started_at, 3),
            "pid": os.getpid(),
            "model": {
                "name": MODEL_NAME,
                "version": MODEL_VERSION,
                "accuracy": round(self.accuracy(), 4),
            },
            "market_data": {
                "feed_lag_seconds": round(self.feed_lag_seconds(), 3),
                "last_update": rfc3339(self.feed_updated_at),
                "stale_after_seconds": self.settings.stale_after_seconds,
            },
            "memory": {"rss_bytes": int(read_rss_bytes()), "leaked_bytes": self.leaked_bytes()},
            "traffic_rps": self.settings.traffic_rps,
            "faults": [fault.to_json() for fault in self.faults.values()],
        }


def build_feature_matrix(symbol: str) -> None:
    """The `out_of_memory` fault: the model's feature matrix cannot be allocated."""
    raise MemoryError(f"unable to allocate 2.3 GiB for the feature matrix of {symbol!r}")


class BackgroundTasks:
    """Simulated traffic, the market data feed and the memory leak, run during lifespan."""

    def __init__(self, state: PredictorState) -> None:
        self.state = state
        self.tasks: list[asyncio.Task[None]] = []
        self.in_flight: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        loops = [self._feed(), self._leak()]
        if self.state.settings.traffic_rps > 0:
            loops.append(self._traffic())
        self.tasks = [asyncio.create_task(loop) for loop in loops]

    async def stop(self) -> None:
        pending = [*self.tasks, *self.in_flight]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self.state.release_leak()

    async def _traffic(self) -> None:
        interval = 1.0 / self.state.settings.traffic_rps
        while True:
            if len(self.in_flight) < MAX_IN_FLIGHT:
                task = asyncio.create_task(self.state.predict(self.state.rng.choice(SYMBOLS)))
                self.in_flight.add(task)
                task.add_done_callback(self.in_flight.discard)
            await asyncio.sleep(interval)

    async def _feed(self) -> None:
        while True:
            if "feed_down" in self.state.faults:
                log_feed_refused()
            elif "stale_data" not in self.state.faults:
                self.state.feed_updated_at = time.time()
            await asyncio.sleep(1.0)

    async def _leak(self) -> None:
        while True:
            fault = self.state.faults.get("memory_leak")
            if fault is not None:
                self.state.grow_leak(time.time() - fault.since)
            await asyncio.sleep(0.1)


def log_feed_refused() -> None:
    """The `feed_down` fault: the vendor refuses the feed's connections."""
    feed_log = logging.getLogger("predictor.feed")
    try:
        raise ConnectionRefusedError(111, "Connection refused")
    except ConnectionRefusedError as exc:
        feed_log.error("market data fetch from %s failed: %s; retrying in 1s", FEED_VENDOR, exc)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"invalid JSON body: {exc}") from None


Handler = Callable[[Request], Awaitable[Response]]


class PredictorApp:
    """The ASGI application: routes, admin auth and lifespan."""

    def __init__(self, settings: Settings, state: PredictorState | None = None) -> None:
        self.settings = settings
        self.state = state or PredictorState(settings)
        self.background = BackgroundTasks(self.state)
        self.routes: dict[str, dict[str, Handler]] = {
            "/health": {"GET": self.health},
            "/status": {"GET": self.status},
            "/metrics": {"GET": self.metrics},
            "/predict": {"POST": self.predict},
            "/admin/fault": {"POST": self.admin_fault},
            "/admin/recover": {"POST": self.admin_recover},
        }
        for kind in settings.start_faults:
            self.state.inject(parse_fault({"kind": kind}, time.time()))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            response = await self._respond(scope, receive)
            await response.send(send)
            if response.after is not None:
                response.after()

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.background.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.background.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _respond(self, scope: dict[str, Any], receive: Any) -> Response:
        methods = self.routes.get(scope["path"])
        if methods is None:
            return error(404, f"no such endpoint: {scope['path']}")
        handler = methods.get(scope["method"])
        if handler is None:
            allow = ", ".join(methods).encode()
            return error(405, f"method {scope['method']} not allowed", headers=[(b"allow", allow)])
        try:
            request = await read_request(scope, receive)
            if scope["path"].startswith("/admin/") and not self._authorized(request):
                return error(401, "missing or wrong bearer token", headers=[_BEARER_CHALLENGE])
            return await handler(request)
        except BadRequest as exc:
            return error(400, str(exc))
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            self.state.metrics.errors.labels(kind="internal").inc()
            return error(500, "internal error")

    def _authorized(self, request: Request) -> bool:
        token = self.settings.admin_token
        if not token:
            return True
        supplied = request.headers.get("authorization", "")
        return hmac.compare_digest(supplied.encode(), f"Bearer {token}".encode())

    async def health(self, request: Request) -> Response:
        reasons = self.state.health_reasons()
        if reasons:
            return Response.json(503, {"status": "unhealthy", "reasons": reasons})
        uptime = round(time.time() - self.state.started_at, 3)
        return Response.json(200, {"status": "healthy", "version": VERSION, "uptime": uptime})

    async def status(self, request: Request) -> Response:
        return Response.json(200, self.state.status())

    async def metrics(self, request: Request) -> Response:
        return Response(200, self.state.metrics.render(), content_type=CONTENT_TYPE_LATEST)

    async def predict(self, request: Request) -> Response:
        try:
            symbol = parse_symbol(request.json())
        except BadRequest:
            self.state.metrics.requests.labels(code="400").inc()
            self.state.metrics.errors.labels(kind="bad_request").inc()
            raise
        status, body = await self.state.predict(symbol)
        return Response.json(status, body)

    async def admin_fault(self, request: Request) -> Response:
        fault = parse_fault(request.json(), time.time())
        self.state.inject(fault)
        payload = {"status": "injected", "fault": fault.to_json()}
        if fault.kind != "crash":
            return Response.json(200, payload)
        code, delay = int(fault.params["exit_code"]), fault.params["delay_seconds"]
        payload["status"] = "crashing"
        return Response.json(202, payload, after=lambda: schedule_crash(code, delay))

    async def admin_recover(self, request: Request) -> Response:
        cleared = self.state.recover()
        return Response.json(200, {"status": "recovered", "cleared": cleared})


_BEARER_CHALLENGE = (b"www-authenticate", b"Bearer")


async def read_request(scope: dict[str, Any], receive: Any) -> Request:
    """Read the whole body (at most MAX_BODY_BYTES) of an HTTP request."""
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadRequest(f"body larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    return Request(scope["method"], scope["path"], headers, b"".join(chunks))


def parse_symbol(body: Any) -> str:
    symbol = body.get("symbol") if isinstance(body, dict) else None
    if not isinstance(symbol, str) or not SYMBOL_RE.match(symbol.upper()):
        raise BadRequest('body must be {"symbol": "<ticker>"}, e.g. {"symbol": "AAPL"}')
    return symbol.upper()


def schedule_crash(exit_code: int, delay: float) -> None:
    """Exit the whole process with ``exit_code`` after ``delay`` seconds (the crash fault)."""

    def crash() -> None:
        log.critical("crash fault: exiting with code %d", exit_code)
        logging.shutdown()
        os._exit(exit_code)

    asyncio.get_running_loop().call_later(delay, crash)


def parse_args(argv: Iterable[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m examples.predictor", description="Demo Market Predictor service."
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--traffic-rps", type=float, default=20.0, help="simulated predictions/s (0 disables)"
    )
    parser.add_argument(
        "--admin-token",
        default=os.environ.get("PREDICTOR_ADMIN_TOKEN") or None,
        help="bearer token required on /admin/* (default: $PREDICTOR_ADMIN_TOKEN, else none)",
    )
    parser.add_argument(
        "--start-fault",
        action="append",
        default=[],
        choices=[kind for kind in FAULT_KINDS if kind != "crash"],
        help="inject a fault (default parameters) at start; repeatable",
    )
    parser.add_argument("--stale-after", type=float, default=300.0, help="unhealthy feed lag (s)")
    parser.add_argument(
        "--memory-threshold-mb", type=float, default=200.0, help="unhealthy RSS (MiB)"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument(
        "--log-file",
        type=Path,
        default=None,
        help="also write the log to this file (rotated at 10 MiB to FILE.1)",
    )
    args = parser.parse_args(None if argv is None else list(argv))
    return Settings(
        host=args.host,
        port=args.port,
        traffic_rps=max(0.0, args.traffic_rps),
        admin_token=args.admin_token,
        start_faults=tuple(args.start_fault),
        stale_after_seconds=args.stale_after,
        memory_threshold_mb=args.memory_threshold_mb,
        seed=args.seed,
        log_level=args.log_level,
        log_file=args.log_file,
    )


class UTCFormatter(logging.Formatter):
    """Times as RFC 3339 UTC with milliseconds: what log readers parse without guessing."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return rfc3339(record.created)


def configure_logging(settings: Settings) -> None:
    """Log lines to stderr and, with `--log-file`, to that file (rotated once)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if settings.log_file is not None:
        handlers.append(
            logging.handlers.RotatingFileHandler(
                settings.log_file, maxBytes=LOG_FILE_MAX_BYTES, backupCount=1, encoding="utf-8"
            )
        )
    formatter = UTCFormatter(LOG_FORMAT)
    for handler in handlers:
        handler.setFormatter(formatter)
    logging.basicConfig(level=settings.log_level.upper(), handlers=handlers, force=True)


def main(argv: Iterable[str] | None = None) -> int:
    """Run the service until SIGTERM/SIGINT; returns the process exit code."""
    settings = parse_args(argv)
    configure_logging(settings)
    log.info(
        "starting market predictor %s (model %s %s) on %s:%d",
        VERSION,
        MODEL_NAME,
        MODEL_VERSION,
        settings.host,
        settings.port,
    )
    import uvicorn

    config = uvicorn.Config(
        PredictorApp(settings),
        host=settings.host,
        port=settings.port,
        interface="asgi3",
        lifespan="on",
        access_log=False,
        log_level=settings.log_level,
    )
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal
    # with the previous handler in place: make that handler a clean exit (0).
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_cleanly)
    server.run()
    return 0 if server.started else 1


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
