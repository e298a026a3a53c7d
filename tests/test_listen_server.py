"""`listen`'s HTTP side over real loopback HTTP: auth, bad input, operations endpoints."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from market_agent.audit import AuditLog
from market_agent.errors import ConfigError
from market_agent.listen.admission import Listener
from market_agent.listen.http import WebhookApp, bind_socket, check_auth, is_loopback
from market_agent.settings import ListenSettings
from tests.test_listen_pipeline import FakeService

TOKEN = "t0ken-for-tests-4f9a"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "alerts"
GOOD = (EXAMPLES / "predictor-down.json").read_bytes()
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Running:
    """A WebhookApp under a real uvicorn server in a thread."""

    def __init__(self, tmp_path: Path, *, token: str | None = TOKEN, **options: Any) -> None:
        import uvicorn

        self.audit = AuditLog(tmp_path / "audit.jsonl")
        self.service = FakeService()
        self.listener = Listener(self.audit, self.service, **options.pop("listener", {}))
        self.listener.start()
        self.app = WebhookApp(
            self.listener, token=token, max_body_bytes=options.pop("max_body_bytes", 4096)
        )
        self.sock = bind_socket("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)

    def post(self, body: bytes = GOOD, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.post(
            f"{self.url}/webhook/alerts",
            content=body,
            headers=AUTH if headers is None else headers,
            timeout=5,
        )

    def records(self) -> list[dict[str, Any]]:
        path = self.audit.path
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def rejected(self, reason: str) -> float:
        return self.listener.metrics.rejected.labels(reason)._value.get()

    def close(self) -> None:
        self.service.gate.set()
        self.server.should_exit = True
        self.thread.join(10)
        self.listener.stop(5)
        self.sock.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Running]:
    running = Running(tmp_path)
    yield running
    running.close()


def assert_rejected(response: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error", "reason"}
    assert body["reason"] == reason
    assert "Traceback" not in body["error"] and "Error(" not in body["error"]
    return body


# Auth ----------------------------------------------------------------------------------


def test_valid_notification_with_token_is_acknowledged_after_journaling(server):
    response = server.post()
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "accepted"
    assert body["id"] in {r.get("id") for r in server.records() if r["kind"] == "notification"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer"},
    ],
    ids=["missing", "wrong", "longer", "basic-scheme", "no-scheme", "empty"],
)
def test_missing_or_wrong_token_is_401_and_not_journaled(server, headers):
    response = server.post(headers=headers)
    assert_rejected(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert server.records() == []
    assert server.rejected("unauthorized") == 1


def test_bearer_scheme_is_case_insensitive(server):
    assert server.post(headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


def test_no_token_configured_means_no_auth_on_loopback(tmp_path):
    running = Running(tmp_path, token=None)
    try:
        assert running.post(headers={}).status_code == 200
    finally:
        running.close()


# Bad input ----------------------------------------------------------------------------


def test_body_over_limit_by_content_length_is_413(server):
    response = server.post(b"{" + b" " * 5000 + b"}")
    assert_rejected(response, 413, "too_large")
    assert server.records() == []


def test_chunked_body_over_limit_is_413(server):
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    response = httpx.post(f"{server.url}/webhook/alerts", content=chunks(), headers=AUTH, timeout=5)
    assert_rejected(response, 413, "too_large")


def test_chunked_body_under_limit_is_accepted(server):
    response = httpx.post(
        f"{server.url}/webhook/alerts", content=iter([GOOD[:100], GOOD[100:]]), headers=AUTH
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b'{"alerts": [', b"\xff\xfe\x00garbage", b'"\\ud800"'],
    ids=["empty", "text", "truncated", "binary", "lone-surrogate"],
)
def test_non_json_is_400(tmp_path, body):
    running = Running(tmp_path, max_body_bytes=10_000)
    try:
        assert_rejected(running.post(body), 400, "bad_json")
        assert running.records() == []
        assert running.rejected("bad_json") == 1
    finally:
        running.close()


@pytest.mark.parametrize("depth", [65, 3000], ids=["past-the-limit", "past-the-parsers"])
def test_nesting_deeper_than_64_is_422(tmp_path, depth):
    running = Running(tmp_path, max_body_bytes=10_000)
    try:
        assert_rejected(running.post(b"[" * depth + b"]" * depth), 422, "invalid")
        assert running.records() == []
    finally:
        running.close()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"[]", "expected a JSON object"),
        (b'"text"', "expected a JSON object"),
        (b"{}", "'alerts'"),
        (b'{"status": "firing", "alerts": []}', "alerts"),
        (b'{"status": "burning", "alerts": [{"labels": {}}]}', "status"),
        (b'{"status": "firing", "alerts": [{"labels": {"a": 1}}]}', "alerts[0].labels.a"),
        (b'{"status": "firing", "alerts": [{"labels": {}}], "truncatedAlerts": -1}', "truncated"),
    ],
    ids=["array", "string", "no-alerts", "empty-alerts", "bad-status", "bad-label", "negative"],
)
def test_schema_invalid_is_422_with_a_short_message(server, body, expected):
    error = assert_rejected(server.post(body), 422, "invalid")["error"]
    assert expected in error
    assert len(error) <= 300
    assert server.records() == []


def test_huge_validation_message_is_capped(server):
    labels = {("k" * 200 + str(i)): i for i in range(5)}
    body = json.dumps({"status": "firing", "alerts": [{"labels": labels}]}).encode()
    assert len(assert_rejected(server.post(body), 422, "invalid")["error"]) <= 300


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/webhook/alerts"), ("PUT", "/webhook/alerts"), ("POST", "/healthz")],
)
def test_wrong_method_is_405_with_allow(server, method, path):
    response = httpx.request(method, server.url + path, headers=AUTH)
    assert_rejected(response, 405, "method_not_allowed")
    assert response.headers["allow"] in {"POST", "GET"}


def test_unknown_path_is_404(server):
    assert_rejected(httpx.get(server.url + "/admin"), 404, "not_found")


def test_internal_error_is_a_generic_500_with_an_error_id(server, monkeypatch):
    async def broken(notification):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(server.listener, "admit", broken)
    body = assert_rejected(server.post(), 500, "internal")
    assert "error id" in body["error"]
    assert "secret" not in body["error"]


def test_full_queue_is_503_with_retry_after(tmp_path):
    running = Running(tmp_path, listener={"queue_size": 1, "workers": 1})
    running.service.gate.clear()
    try:
        assert running.post(GOOD).status_code == 200
        assert running.service.started.acquire(timeout=5)
        second = json.loads(GOOD)
        second["alerts"][0]["fingerprint"] = "other"
        assert running.post(json.dumps(second).encode()).status_code == 200
        third = json.loads(GOOD)
        third["alerts"][0]["fingerprint"] = "third"
        response = running.post(json.dumps(third).encode())
        assert_rejected(response, 503, "queue_full")
        assert response.headers["retry-after"]
        assert sum(r["kind"] == "notification" for r in running.records()) == 2
    finally:
        running.close()


def test_journal_failure_is_503_so_alertmanager_retries(server, monkeypatch):
    from market_agent.errors import AuditError

    def fail(entries):
        raise AuditError("audit log /x: cannot write: No space left on device")

    monkeypatch.setattr(server.audit, "append_many", fail)
    body = assert_rejected(server.post(), 503, "journal_error")
    assert "error id" in body["error"] and "/x" not in body["error"]


def test_duplicate_is_200_and_counted(server):
    assert server.post().json()["status"] == "accepted"
    assert server.post().json() == {"status": "duplicate", "id": None}
    assert server.listener.metrics.duplicate._value.get() == 1


# Operations ---------------------------------------------------------------------------


def test_healthz_readyz_and_metrics(server):
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    server.post()
    server.post(headers={})
    metrics = httpx.get(server.url + "/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'market_agent_notifications_received_total{status="firing"} 1.0' in text
    assert 'market_agent_notifications_rejected_total{reason="unauthorized"} 1.0' in text
    assert "process_resident_memory_bytes" in text
    assert TOKEN not in text


def test_readyz_is_503_once_stopping(server):
    server.listener.stop(0)
    assert httpx.get(server.url + "/readyz").status_code == 503


# Start-up checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("192.0.2.10", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_non_loopback_without_token_is_refused():
    with pytest.raises(ConfigError, match="without a token"):
        check_auth(ListenSettings(host="0.0.0.0"))


def test_non_loopback_without_token_is_allowed_with_insecure_flag(caplog):
    assert check_auth(ListenSettings(host="0.0.0.0", insecure_no_auth=True)) is None
    assert "WITHOUT authentication" in caplog.text


def test_token_file_wins_and_empty_token_is_refused(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    settings = ListenSettings(token="from-config", token_file=token_file)
    assert check_auth(settings) == "from-file"
    token_file.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        check_auth(settings)


def test_busy_port_is_a_clear_error():
    with bind_socket("127.0.0.1", 0) as sock:
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            bind_socket("127.0.0.1", port)
