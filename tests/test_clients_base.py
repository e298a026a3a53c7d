"""The shared client plumbing: error taxonomy, retries, time budget, auth, TLS."""

from __future__ import annotations

import base64
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from market_agent.clients import (
    ClientError,
    DeadlineExceeded,
    FailureKind,
    RetryPolicy,
    ServiceClient,
    run_concurrently,
)
from market_agent.errors import ConfigError, ExitCode, ServiceError
from market_agent.settings import EndpointSettings

URL = "http://svc.test:8000"
FAST = RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.02, jitter=0)


def client(url: str = URL, *, retry: RetryPolicy = FAST, **settings: object) -> ServiceClient:
    return ServiceClient(EndpointSettings(url=url, **settings), retry=retry)


def chained(exc: httpx.HTTPError, cause: BaseException) -> httpx.HTTPError:
    exc.__cause__ = cause
    return exc


# Error taxonomy -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exception", "kind", "detail"),
    [
        (
            chained(httpx.ConnectError("[Errno 111]"), ConnectionRefusedError(111, "refused")),
            FailureKind.CONNECTION_REFUSED,
            "connection refused",
        ),
        (
            httpx.ConnectError("[Errno 111] Connection refused"),
            FailureKind.CONNECTION_REFUSED,
            "connection refused",
        ),
        (
            chained(
                httpx.ConnectError("[Errno -2] Name or service not known"),
                socket.gaierror(-2, "Name or service not known"),
            ),
            FailureKind.DNS,
            "cannot resolve the host name",
        ),
        (
            chained(
                httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number"),
                ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
            ),
            FailureKind.TLS,
            "TLS error",
        ),
        (httpx.ReadTimeout("timed out"), FailureKind.TIMEOUT, "no answer within 2 s"),
        (httpx.ConnectTimeout("timed out"), FailureKind.TIMEOUT, "no answer within 2 s"),
        (
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            FailureKind.CONNECTION,
            "connection failed (Server disconnected",
        ),
    ],
)
def test_transport_failures_are_classified(httpx_mock, exception, kind, detail):
    httpx_mock.add_exception(exception, is_reusable=True)
    with pytest.raises(ClientError) as caught:
        client(timeout=2.0).get("/x")
    error = caught.value
    assert error.kind is kind
    assert detail in error.detail
    assert error.message.startswith(f"service at {URL}: ")
    assert isinstance(error, ServiceError)
    assert error.exit_code is ExitCode.SERVICE


def test_http_status_names_the_request_and_the_service_reason(httpx_mock):
    httpx_mock.add_response(status_code=404, text="no such endpoint: /x\nmore")
    with pytest.raises(ClientError) as caught:
        client().get("/x")
    error = caught.value
    assert error.kind is FailureKind.HTTP_STATUS
    assert error.status_code == 404
    assert error.detail == "HTTP 404 for GET /x: no such endpoint: /x"
    assert "check the path in service.url" in error.message


def test_unauthorized_points_at_credentials(httpx_mock):
    httpx_mock.add_response(status_code=401)
    with pytest.raises(ClientError, match=r"check the credentials in \[service\]"):
        client().get("/x")


def test_invalid_json_body(httpx_mock):
    httpx_mock.add_response(text="<html>hello</html>")
    with pytest.raises(ClientError) as caught:
        client().get_json("/x")
    assert caught.value.kind is FailureKind.INVALID_BODY
    assert caught.value.detail == "invalid answer to GET /x: not JSON"


def test_error_json_form(httpx_mock):
    httpx_mock.add_response(status_code=400, text="bad")
    with pytest.raises(ClientError) as caught:
        client().get("/x")
    assert caught.value.to_json_dict() == {
        "kind": "http_status",
        "message": "HTTP 400 for GET /x: bad",
        "status_code": 400,
    }


def test_unreachable_kinds():
    unreachable = {kind for kind in FailureKind if kind.unreachable}
    assert unreachable == {"connection_refused", "dns", "timeout", "tls", "connection"}


# Retries --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        {"exception": httpx.ConnectError("[Errno 111] Connection refused")},
        {"exception": httpx.ReadTimeout("timed out")},
        {"exception": httpx.RemoteProtocolError("Server disconnected")},
        {"status_code": 503},
        {"status_code": 500},
    ],
)
def test_get_retries_transient_failures_then_succeeds(httpx_mock, failure):
    for _ in range(2):
        if "exception" in failure:
            httpx_mock.add_exception(failure["exception"])
        else:
            httpx_mock.add_response(status_code=failure["status_code"])
    httpx_mock.add_response(json={"ok": True})
    assert client().get_json("/x") == {"ok": True}
    assert len(httpx_mock.get_requests()) == 3


def test_get_gives_up_after_the_configured_attempts(httpx_mock):
    httpx_mock.add_response(status_code=503, is_reusable=True)
    with pytest.raises(ClientError) as caught:
        client().get("/x")
    assert caught.value.status_code == 503
    assert len(httpx_mock.get_requests()) == 3


@pytest.mark.parametrize(
    "failure",
    [
        {"status_code": 404},
        {"status_code": 400},
        {"status_code": 401},
        {"exception": httpx.ConnectError("[Errno -2] Name or service not known")},
        {"exception": httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate")},
    ],
)
def test_get_does_not_retry_what_a_retry_cannot_fix(httpx_mock, failure):
    if "exception" in failure:
        httpx_mock.add_exception(failure["exception"])
    else:
        httpx_mock.add_response(status_code=failure["status_code"])
    with pytest.raises(ClientError):
        client().get("/x")
    assert len(httpx_mock.get_requests()) == 1


@pytest.mark.parametrize(
    "failure",
    [
        {"exception": httpx.ConnectError("[Errno 111] Connection refused")},
        {"exception": httpx.ReadTimeout("timed out")},
        {"status_code": 503},
    ],
)
def test_post_is_never_retried(httpx_mock, failure):
    if "exception" in failure:
        httpx_mock.add_exception(failure["exception"], method="POST")
    else:
        httpx_mock.add_response(status_code=failure["status_code"], method="POST")
    with pytest.raises(ClientError):
        client().post("/admin/recover", json={})
    assert len(httpx_mock.get_requests()) == 1


def test_retries_stop_when_the_next_wait_would_pass_the_time_budget(httpx_mock):
    httpx_mock.add_response(status_code=503, is_reusable=True)
    patient = RetryPolicy(attempts=10, initial_wait=0.2, max_wait=1.0, jitter=0)
    with pytest.raises(ClientError):
        client(retry=patient, timeout=0.3).get("/x")
    # attempt, wait 0.2 s, attempt; the next wait (0.4 s) would end past 0.3 s.
    assert len(httpx_mock.get_requests()) == 2


def test_a_smaller_per_call_timeout_is_used_for_the_request(httpx_mock):
    httpx_mock.add_response()
    client(timeout=5.0).get("/x", timeout=0.5)
    timeouts = httpx_mock.get_requests()[0].extensions["timeout"]
    assert 0 < timeouts["read"] <= 0.5


def test_the_endpoint_timeout_caps_a_larger_per_call_timeout(httpx_mock):
    httpx_mock.add_response()
    client(timeout=1.0).get("/x", timeout=30)
    assert httpx_mock.get_requests()[0].extensions["timeout"]["read"] <= 1.0


# Auth, URLs and secrets -----------------------------------------------------------


def test_bearer_token(httpx_mock):
    httpx_mock.add_response(match_headers={"Authorization": "Bearer s3cret-token"})
    client(bearer_token="s3cret-token").get("/x")


def test_bearer_token_file(httpx_mock, tmp_path: Path):
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    httpx_mock.add_response(match_headers={"Authorization": "Bearer from-file"})
    client(bearer_token_file=token_file).get("/x")


def test_basic_auth(httpx_mock):
    expected = "Basic " + base64.b64encode(b"ops:pa55").decode()
    httpx_mock.add_response(match_headers={"Authorization": expected})
    client(username="ops", password="pa55").get("/x")


def test_no_auth_sends_no_authorization_header(httpx_mock):
    httpx_mock.add_response()
    client().get("/x")
    assert "Authorization" not in httpx_mock.get_requests()[0].headers


def test_bearer_and_basic_together_is_a_config_error():
    with pytest.raises(ConfigError, match="both a bearer token and a username"):
        client(bearer_token="t", username="u", password="p")


def test_missing_token_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="bearer_token_file"):
        client(bearer_token_file=tmp_path / "missing")


@pytest.mark.parametrize("url", ["http://:9090", "https://", "localhost:9090", "ftp://host"])
def test_bad_urls_are_config_errors(url):
    # Settings validate the scheme too; the client checks again when built directly.
    settings = EndpointSettings.model_construct(url=url, timeout=1.0)
    with pytest.raises(ConfigError, match=r"service\.url"):
        ServiceClient(settings)


def test_credentials_in_the_url_never_reach_messages(httpx_mock):
    httpx_mock.add_response(status_code=500, text="failed: password=hunter2", is_reusable=True)
    with pytest.raises(ClientError) as caught:
        client("http://admin:hunter2@svc.test:8000/base").get("/x")
    assert "hunter2" not in caught.value.message
    assert caught.value.url == "http://svc.test:8000/base"


def test_base_path_is_kept(httpx_mock):
    httpx_mock.add_response(url="http://svc.test:8000/prom/api/v1/query")
    client("http://svc.test:8000/prom/").get("/api/v1/query")


# TLS, against a real local HTTPS server ------------------------------------------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """An HTTPS server on 127.0.0.1 with a self-signed certificate: (url, cert path)."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    openssl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    subprocess.run(
        [
            *openssl,
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"status": "healthy"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", cert
    server.shutdown()
    server.server_close()


def test_untrusted_certificate_is_a_tls_failure(tls_server):
    url, _ = tls_server
    with pytest.raises(ClientError) as caught:
        client(url).get("/health")
    assert caught.value.kind is FailureKind.TLS
    assert "certificate verify failed" in caught.value.detail
    assert "verify_tls" in caught.value.message


def test_ca_file_makes_the_certificate_trusted(tls_server):
    url, cert = tls_server
    assert client(url, ca_file=cert).get_json("/health") == {"status": "healthy"}


def test_verify_tls_false_skips_verification(tls_server):
    url, _ = tls_server
    assert client(url, verify_tls=False).get("/health").status_code == 200


def test_missing_ca_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="ca_file"):
        client("https://svc.test", ca_file=tmp_path / "nope.pem")


def test_unreadable_ca_file_is_a_config_error(tmp_path: Path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match="cannot load"):
        client("https://svc.test", ca_file=bad)


# Real sockets: refused and silent -------------------------------------------------


def test_refused_connection_on_a_real_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ClientError) as caught:
        client(f"http://127.0.0.1:{port}").get("/health")
    assert caught.value.kind is FailureKind.CONNECTION_REFUSED


def test_a_silent_server_times_out_once_within_the_budget():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # accepts connections (kernel backlog), never answers
        port = listener.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ClientError) as caught:
            client(f"http://127.0.0.1:{port}", timeout=0.5).get("/health")
        elapsed = time.monotonic() - started
    assert caught.value.kind is FailureKind.TIMEOUT
    assert caught.value.detail == "no answer within 0.5 s"
    assert elapsed < 1.0  # the timeout is a budget: no retry after it ran out


# Concurrency ----------------------------------------------------------------------


def test_run_concurrently_returns_results_and_exceptions():
    def boom():
        raise ValueError("bad")

    results = run_concurrently({"a": (lambda: 1, 1.0), "b": (boom, 1.0)})
    assert results["a"] == 1
    assert isinstance(results["b"], ValueError)


def test_run_concurrently_abandons_a_call_at_its_deadline():
    release = threading.Event()
    started = time.monotonic()
    results = run_concurrently({"slow": (lambda: release.wait(10), 0.2), "fast": (lambda: 2, 5)})
    elapsed = time.monotonic() - started
    release.set()
    assert results["fast"] == 2
    assert isinstance(results["slow"], DeadlineExceeded)
    assert str(results["slow"]) == "no answer within 0.2 s"
    assert elapsed < 5


def test_run_concurrently_runs_calls_at_the_same_time():
    barrier = threading.Barrier(3, timeout=2)
    results = run_concurrently(dict.fromkeys("abc", (barrier.wait, 3.0)))
    # Each call waits for the other two: only possible if all three run at once.
    assert sorted(results.values()) == [0, 1, 2]
