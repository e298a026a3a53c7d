"""Fuzzing the webhook endpoint over real HTTP, with the real rule analyzer behind it.

Properties: `listen` never answers 500 for input and never crashes; every accepted
notification is journaled and analysed; the audit log always parses and its hash
chain verifies afterwards. Hostile values (lone surrogates, deep nesting, huge
strings, control characters, odd types) are refused as documented or carried whole.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from market_agent.analysis.factory import build_analysis_service
from market_agent.audit import AuditLog
from market_agent.inputs import MAX_DEPTH, deeper_than, has_lone_surrogate
from market_agent.listen.admission import Listener
from market_agent.listen.http import WebhookApp, bind_socket
from market_agent.settings import load_settings
from tests.test_fuzz_analyze import notification, odd_text

TOKEN = "fuzz-token-0123456789"
LIMIT = 256 * 1024
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class LiveListener:
    """WebhookApp + Listener with the real rules service, under uvicorn in a thread."""

    def __init__(self, tmp_path: Path) -> None:
        import uvicorn

        self.audit = AuditLog(tmp_path / "audit.jsonl", fsync=False)
        service = build_analysis_service(load_settings(), use_llm=False)
        self.listener = Listener(self.audit, service, queue_size=10_000)
        self.listener.start()
        app = WebhookApp(self.listener, token=TOKEN, max_body_bytes=LIMIT)
        self.sock = bind_socket("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def post(self, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.client.post(
            "/webhook/alerts", content=body, headers=AUTH if headers is None else headers
        )

    def close(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(10)
        self.listener.stop(10)
        self.sock.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveListener]:
    running = LiveListener(tmp_path_factory.mktemp("fuzz-listen"))
    yield running
    running.close()
    report = running.audit.verify()
    assert report.ok, report
    records = [json.loads(line) for line in running.audit.path.read_text().splitlines()]
    accepted = {r["id"] for r in records if r["kind"] == "notification"}
    analysed = {r["notification_id"] for r in records if r["kind"] == "analysis"}
    assert accepted == analysed, "every journaled notification is analysed exactly once"
    assert len([r for r in records if r["kind"] == "analysis"]) == len(analysed)


def assert_no_server_error(response: httpx.Response) -> None:
    assert response.status_code < 500 or response.json().get("reason") == "queue_full"
    assert "Traceback" not in response.text
    assert response.headers["content-type"].startswith("application/json")


@FUZZ
@given(body=st.binary(max_size=4096))
def test_arbitrary_bytes(live: LiveListener, body: bytes) -> None:
    response = live.post(body)
    assert_no_server_error(response)
    assert response.status_code in (200, 400, 422)


@FUZZ
@given(value=st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | odd_text,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(odd_text, children, max_size=4),
    max_leaves=25,
))  # fmt: skip
def test_arbitrary_json(live: LiveListener, value: Any) -> None:
    body = json.dumps(value).encode()
    response = live.post(body)
    assert_no_server_error(response)
    assert response.status_code in ((413,) if len(body) > LIMIT else (200, 400, 422))


@FUZZ
@given(payload=notification())
def test_valid_but_odd_notifications_are_accepted(live: LiveListener, payload: dict) -> None:
    body = json.dumps(payload).encode()
    response = live.post(body)
    assert_no_server_error(response)
    assert response.status_code == (413 if len(body) > LIMIT else 200), response.text
    if response.status_code == 200:
        assert response.json()["status"] in ("accepted", "duplicate")


@FUZZ
@given(
    method=st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "POST"]),
    path=st.sampled_from(["/webhook/alerts", "/", "/webhook", "/metrics/../x", "/%00"]),
    auth=st.sampled_from([None, "Bearer wrong", "Basic abc", "Bearer " + TOKEN + "x", ""]),
    body=st.binary(max_size=256),
)
def test_methods_paths_and_auth(
    live: LiveListener, method: str, path: str, auth: str | None, body: bytes
) -> None:
    headers = {} if auth is None else {"Authorization": auth}
    response = live.client.request(method, path, content=body, headers=headers)
    assert_no_server_error(response)
    if path == "/webhook/alerts" and method == "POST":
        assert response.status_code == 401


def test_huge_strings_deep_nesting_and_oversize(live: LiveListener) -> None:
    deep = b"[" * 20_000 + b"]" * 20_000
    assert live.post(deep).status_code in (400, 422)
    huge = json.dumps({"status": "firing", "alerts": [{"labels": {"a": "x" * (LIMIT + 1)}}]})
    assert live.post(huge.encode()).status_code == 413
    assert live.client.get("/healthz").status_code == 200


#: Text with what the pipeline must refuse or carry: lone surrogates, every control
#: character, NUL, huge runs.
hostile_text = (
    st.text(alphabet=st.characters(blacklist_categories=()), max_size=40)
    | st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=40)
    | st.sampled_from(["\ud800", "a\udfff", "\udc00\ud800", "\x00" * 3, "\x1b[2J\r\n"])
    | st.integers(min_value=1, max_value=120_000).map(lambda n: "A" * n)
)
hostile_scalar = (
    hostile_text
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False)
    | st.none()
    | st.booleans()
)


@st.composite
def nested_value(draw: Any) -> Any:
    """A hostile scalar, wrapped in 0 to 300 levels of lists and objects."""
    value = draw(hostile_scalar)
    for wrap in draw(st.lists(st.booleans(), max_size=300)):
        value = {draw(hostile_text): value} if wrap else [value]
    return value


@st.composite
def hostile_notification(draw: Any) -> dict[str, Any]:
    """A valid notification with a hostile label key, label value or extra field."""
    body = draw(notification())
    where = draw(st.sampled_from(["label_value", "label_key", "extra"]))
    labels = body["alerts"][0].setdefault("labels", {})
    if where == "label_value":
        labels[draw(st.sampled_from(["alertname", "x"]))] = draw(hostile_text)
    elif where == "label_key":
        labels[draw(hostile_text)] = "v"
    else:
        body[draw(st.sampled_from(["extra", "x-custom"]))] = draw(nested_value())
    return body


@FUZZ
@given(
    payload=hostile_notification(),
    encoding=st.sampled_from(["ascii-escapes", "utf-8", "utf-16"]),
)
def test_hostile_values_are_refused_as_documented_or_carried(
    live: LiveListener, payload: dict, encoding: str
) -> None:
    text = json.dumps(payload, ensure_ascii=encoding == "ascii-escapes")
    codec = "utf-16" if encoding == "utf-16" else "utf-8"
    body = text.encode(codec, "surrogatepass")
    response = live.post(body)
    assert_no_server_error(response)
    if len(body) > LIMIT:
        expected = (413, None)
    elif has_lone_surrogate(payload):
        expected = (400, "bad_json")
    elif deeper_than(payload, MAX_DEPTH):
        expected = (422, "invalid")
    else:
        expected = (200, None)
    reason = response.json().get("reason")
    assert (response.status_code, reason if expected[1] else None) == expected, response.text
    assert live.client.get("/readyz").status_code == 200
