"""What every service client shares: one httpx client per endpoint, auth and TLS from
config, bounded retries, and failures sorted into a small taxonomy shown to users.

Retries (tenacity, exponential backoff with jitter) happen only for GETs and only on
connection errors, timeouts and 5xx answers; every call, retries and back-off
included, is bounded by one time budget (the endpoint's ``timeout`` unless the caller
passes a smaller one).
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import httpx
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential,
    wait_random,
)

from market_agent import __version__
from market_agent.errors import ConfigError, ServiceError
from market_agent.redact import redact_text
from market_agent.settings import EndpointSettings

T = TypeVar("T")


class FailureKind(StrEnum):
    """Why a call failed; the values are part of the `--json` contracts."""

    CONNECTION_REFUSED = "connection_refused"
    DNS = "dns"
    TIMEOUT = "timeout"
    TLS = "tls"
    #: Any other network failure: reset, unreachable network, broken HTTP.
    CONNECTION = "connection"
    HTTP_STATUS = "http_status"
    INVALID_BODY = "invalid_body"

    @property
    def unreachable(self) -> bool:
        """True when the service could not be talked to at all."""
        return self not in (FailureKind.HTTP_STATUS, FailureKind.INVALID_BODY)


class ClientError(ServiceError):
    """A failed call: `{service} at {url}: {detail} ({what to check})`."""

    def __init__(
        self,
        service: str,
        url: str,
        kind: FailureKind,
        detail: str,
        *,
        status_code: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(f"{service} at {url}: {detail}" + (f" ({hint})" if hint else ""))
        self.service = service
        self.url = url
        self.kind = kind
        self.detail = detail
        self.status_code = status_code

    def to_json_dict(self) -> dict[str, Any]:
        """`{"kind", "message", "status_code"}`: how failures appear in JSON output."""
        return {"kind": self.kind.value, "message": self.detail, "status_code": self.status_code}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry; the call's time budget bounds it all."""

    attempts: int = 3
    initial_wait: float = 0.05
    max_wait: float = 1.0
    jitter: float = 0.05


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(attempts=1)
#: Don't start an attempt with less time than this left: it could only time out.
MIN_ATTEMPT_SECONDS = 0.05


class ServiceClient:
    """A JSON-over-HTTP client for one configured endpoint; thread-safe, reuse it."""

    #: The settings section name (`[predictor]`, ...), also used in messages.
    service = "service"

    def __init__(self, settings: EndpointSettings, *, retry: RetryPolicy = DEFAULT_RETRY) -> None:
        self.settings = settings
        self.retry = retry
        self.base_url = _base_url(settings.url, self.service)
        self.display_url = _display_url(self.base_url)
        self._http = httpx.Client(
            base_url=self.base_url,
            auth=_auth(settings, self.service),
            verify=_tls_context(settings, self.base_url, self.service),
            headers={"User-Agent": f"market-agent/{__version__}"},
            timeout=settings.timeout,
            follow_redirects=False,
        )

    @property
    def timeout(self) -> float:
        return self.settings.timeout

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def get(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        ok: Iterable[int] = (200,),
        timeout: float | None = None,
    ) -> httpx.Response:
        """GET with retries; an answer with a status outside `ok` raises `ClientError`."""
        return self._call("GET", path, params=params, ok=ok, timeout=timeout, retry=self.retry)

    def post(
        self,
        path: str,
        *,
        json: Any = None,
        ok: Iterable[int] = (200,),
        timeout: float | None = None,
    ) -> httpx.Response:
        """POST once: it may not be idempotent, so it is never retried."""
        return self._call("POST", path, json=json, ok=ok, timeout=timeout, retry=NO_RETRY)

    def get_json(
        self, path: str, *, params: Mapping[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        return self.decode_json(self.get(path, params=params, timeout=timeout))

    def get_object(
        self, path: str, *, params: Mapping[str, Any] | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """GET a JSON object (anything else is an invalid body)."""
        response = self.get(path, params=params, timeout=timeout)
        body = self.decode_json(response)
        if not isinstance(body, dict):
            raise self.invalid_body(response, "expected a JSON object")
        return body

    def decode_json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise self.invalid_body(response, "not JSON") from None

    def invalid_body(self, response: httpx.Response, what: str) -> ClientError:
        return self.error(
            FailureKind.INVALID_BODY,
            f"invalid answer to {response.request.method} {response.request.url.path}: {what}",
            hint=f"is {self.service}.url pointing at the {self.service}?",
        )

    def error(self, kind: FailureKind, detail: str, **kwargs: Any) -> ClientError:
        return ClientError(self.service, self.display_url, kind, detail, **kwargs)

    # Internals ---------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        ok: Iterable[int],
        timeout: float | None,
        retry: RetryPolicy,
        **kwargs: Any,
    ) -> httpx.Response:
        budget = self.timeout if timeout is None else min(timeout, self.timeout)
        deadline = time.monotonic() + budget
        accepted = frozenset(ok)

        def attempt() -> httpx.Response:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self.error(FailureKind.TIMEOUT, f"no answer within {budget:g} s")
            try:
                response = self._http.request(method, path, timeout=remaining, **kwargs)
            except httpx.HTTPError as exc:
                raise self._transport_error(exc, budget) from exc
            if response.status_code not in accepted:
                raise self._status_error(response)
            return response

        retrying = Retrying(
            stop=stop_after_attempt(retry.attempts)
            | stop_before_delay(max(budget - MIN_ATTEMPT_SECONDS, 0.0)),
            wait=wait_exponential(multiplier=retry.initial_wait, max=retry.max_wait)
            + wait_random(0, retry.jitter),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        return retrying(attempt)

    def _transport_error(self, exc: httpx.HTTPError, budget: float) -> ClientError | ConfigError:
        if isinstance(exc, httpx.UnsupportedProtocol):
            return ConfigError(f"{self.service}.url {self.display_url}: {exc}")
        kind, detail = classify(exc)
        if kind is FailureKind.TIMEOUT:
            detail = f"no answer within {budget:g} s"
        return self.error(kind, detail, hint=_HINTS[kind].format(service=self.service))

    def _status_error(self, response: httpx.Response) -> ClientError:
        code = response.status_code
        request = response.request
        detail = f"HTTP {code} for {request.method} {request.url.path}"
        reason = self.error_detail(response)
        if reason:
            detail += f": {reason}"
        return self.error(
            FailureKind.HTTP_STATUS, detail, status_code=code, hint=_status_hint(code, self.service)
        )

    def error_detail(self, response: httpx.Response) -> str:
        """The service's own explanation of an error answer, in one short line:
        `{"errorType", "error"}` (Prometheus, the predictor), `{"message"}`
        (Alertmanager), else the first line of the body."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("error"):
            kind = f"{body['errorType']}: " if body.get("errorType") else ""
            return one_line(f"{kind}{body['error']}", 300)
        if isinstance(body, dict) and body.get("message"):
            return one_line(str(body["message"]), 300)
        return one_line(response.text)


def one_line(text: str, limit: int = 200) -> str:
    """First non-empty line, redacted and capped: safe to show and log."""
    for line in text.splitlines():
        if line.strip():
            return redact_text(line.strip())[:limit]
    return ""


_HINTS = {
    FailureKind.CONNECTION_REFUSED: "is it running, and is {service}.url right?",
    FailureKind.DNS: "check the host name in {service}.url",
    FailureKind.TIMEOUT: "is it overloaded or hung? {service}.timeout sets the limit",
    FailureKind.TLS: "check {service}.verify_tls and {service}.ca_file",
    FailureKind.CONNECTION: "check the network path to it",
}


def _status_hint(code: int, service: str) -> str | None:
    if code in (401, 403):
        return f"check the credentials in [{service}]"
    if code == 404:
        return f"check the path in {service}.url"
    if code >= 500:
        return "check its logs"
    return None


def classify(exc: BaseException) -> tuple[FailureKind, str]:
    """Sort a transport exception into the taxonomy, with a short description."""
    if isinstance(exc, httpx.TimeoutException):
        return FailureKind.TIMEOUT, "timed out"
    chain = list(_exception_chain(exc))
    for cause in chain:
        if isinstance(cause, ssl.SSLError):
            return FailureKind.TLS, f"TLS error: {_ssl_reason(cause)}"
        if isinstance(cause, ConnectionRefusedError):
            return FailureKind.CONNECTION_REFUSED, "connection refused"
        if isinstance(cause, socket.gaierror):
            return FailureKind.DNS, f"cannot resolve the host name ({cause.strerror or cause})"
    text = " ".join(str(cause) for cause in chain).lower()
    if "refused" in text:
        return FailureKind.CONNECTION_REFUSED, "connection refused"
    if any(sign in text for sign in _DNS_SIGNS):
        return FailureKind.DNS, "cannot resolve the host name"
    if "ssl" in text or "certificate" in text or "tls" in text:
        return FailureKind.TLS, f"TLS error: {one_line(str(exc))}"
    return FailureKind.CONNECTION, f"connection failed ({one_line(str(exc)) or type(exc).__name__})"


_DNS_SIGNS = (
    "name or service not known",
    "nodename nor servname",
    "temporary failure in name resolution",
    "no address associated",
    "getaddrinfo",
)


def _exception_chain(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _ssl_reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    reason = getattr(exc, "reason", None) or one_line(str(exc))
    return reason.lower().replace("_", " ")


def _retryable(exc: BaseException) -> bool:
    if not isinstance(exc, ClientError):
        return False
    if exc.kind is FailureKind.HTTP_STATUS:
        return exc.status_code is not None and exc.status_code >= 500
    # A wrong host name or certificate will not fix itself within a second.
    return exc.kind in (FailureKind.CONNECTION_REFUSED, FailureKind.TIMEOUT, FailureKind.CONNECTION)


def _base_url(url: str, service: str) -> str:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"{service}.url {url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(
            f"{service}.url {_display_url(url)!r}: expected http(s)://host[:port][/path]"
        )
    return url.rstrip("/")


def _display_url(url: str) -> str:
    """The URL without credentials or query: safe in messages and JSON."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return redact_text(url)
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}{parsed.path.rstrip('/')}"


def _auth(settings: EndpointSettings, service: str) -> httpx.Auth | None:
    token = settings.token()
    has_basic = settings.username is not None or settings.password is not None
    if token is not None and has_basic:
        raise ConfigError(
            f"[{service}]: both a bearer token and a username/password are set; keep one"
        )
    if token is not None:
        return _BearerAuth(token)
    if has_basic:
        password = settings.password.get_secret_value() if settings.password else ""
        return httpx.BasicAuth(settings.username or "", password)
    return None


class _BearerAuth(httpx.Auth):
    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Any:
        request.headers["Authorization"] = self._header
        yield request


def _tls_context(settings: EndpointSettings, url: str, service: str) -> ssl.SSLContext:
    if not url.startswith("https:"):
        # Plain HTTP and redirects are never followed: no TLS handshake can happen,
        # so skip loading a CA bundle (tens of ms per client). With no CA loaded this
        # context would also refuse every certificate, so it fails closed.
        return _no_trust_context()
    if not settings.verify_tls:
        return _insecure_context()
    ca_file = settings.ca_file.expanduser() if settings.ca_file else None
    if ca_file is not None and not ca_file.is_file():
        raise ConfigError(f"{service}.ca_file {ca_file}: no such file")
    try:
        return _verifying_context(ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{service}.ca_file {ca_file}: cannot load: {exc}") from None


@cache
def _no_trust_context() -> ssl.SSLContext:
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


@cache
def _insecure_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@cache
def _verifying_context(ca_file: Path | None) -> ssl.SSLContext:
    """Shared between clients with the same CA: loading a bundle is the slow part."""
    if ca_file is not None:
        return ssl.create_default_context(cafile=str(ca_file))
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


# Concurrency -------------------------------------------------------------------


class DeadlineExceeded(TimeoutError):
    """A concurrent call still running when its time was up (it is abandoned)."""


def run_concurrently(
    calls: Mapping[str, tuple[Callable[[], Any], float]],
) -> dict[str, Any]:
    """Run each `name: (function, timeout)` in its own thread, at the same time.

    Returns `{name: result or the exception raised}`; a call still running after its
    timeout gets a `DeadlineExceeded` and is abandoned. The threads are daemons, so an
    abandoned call can never hold up the process: the whole thing is bounded by the
    largest timeout, whatever the network does.
    """
    started = time.monotonic()
    results: dict[str, Any] = {}
    done = {name: threading.Event() for name in calls}

    def run(name: str, function: Callable[[], Any]) -> None:
        try:
            results[name] = function()
        except Exception as exc:
            results[name] = exc
        finally:
            done[name].set()

    for name, (function, _) in calls.items():
        threading.Thread(target=run, args=(name, function), name=name, daemon=True).start()
    outcome: dict[str, Any] = {}
    for name, (_, timeout) in calls.items():
        finished = done[name].wait(max(0.0, started + timeout - time.monotonic()))
        outcome[name] = (
            results[name] if finished else DeadlineExceeded(f"no answer within {timeout:g} s")
        )
    return outcome
