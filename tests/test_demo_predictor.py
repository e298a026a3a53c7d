"""The demo Market Predictor (examples/predictor) as a real process on a loopback port."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ManagedProcess, free_port, start_predictor, wait_until

pytestmark = pytest.mark.slow

CONTRACT_METRICS = {
    "market_predictor_prediction_requests_total",
    "market_predictor_request_duration_seconds_bucket",
    "market_predictor_errors_total",
    "market_predictor_last_prediction_timestamp_seconds",
    "market_predictor_feed_lag_seconds",
    "market_predictor_model_accuracy",
    "market_predictor_memory_bytes",
    "market_predictor_info",
    "market_predictor_start_time_seconds",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
}
# RSS limit for /health in the shared predictor: well above its ~35 MiB baseline,
# well below baseline + the memory_leak fault's 200 MiB cap.
MEMORY_THRESHOLD_MB = 150


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    tmp_path = tmp_path_factory.mktemp("predictor")
    extra = ["--memory-threshold-mb", str(MEMORY_THRESHOLD_MB), "--seed", "7"]
    with start_predictor(tmp_path, free_port(), traffic_rps=50, extra_args=extra) as process:
        yield process


@pytest.fixture
def client(predictor: ManagedProcess) -> Iterator[httpx.Client]:
    """A client for the shared predictor; every fault is cleared afterwards."""
    port = predictor.argv[predictor.argv.index("--port") + 1]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        yield http
        assert http.post("/admin/recover").status_code == 200


def samples(client: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Scrape /metrics into {(sample name, labels): value}."""
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    return samples(client)[(name, frozenset(labels.items()))]


def inject(client: httpx.Client, kind: str, **params: float) -> None:
    response = client.post("/admin/fault", json={"kind": kind, **params})
    assert response.status_code == 200, response.text
    assert response.json()["fault"]["kind"] == kind


def unhealthy_reasons(client: httpx.Client) -> list[str]:
    response = client.get("/health")
    if response.status_code == 200:
        return []
    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"
    return response.json()["reasons"]


def test_health_and_status_when_healthy(client: httpx.Client, predictor: ManagedProcess) -> None:
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "healthy"
    status = client.get("/status").json()
    assert status["pid"] == predictor.pid
    assert status["uptime_seconds"] > 0
    assert datetime.fromisoformat(status["started_at"]).tzinfo is not None
    assert set(status["model"]) >= {"name", "version", "accuracy"}
    assert 0.7 < status["model"]["accuracy"] <= 1
    assert status["market_data"]["feed_lag_seconds"] < 5
    assert datetime.fromisoformat(status["market_data"]["last_update"]).tzinfo is not None
    assert status["faults"] == []


def test_metrics_expose_the_contract_names(client: httpx.Client) -> None:
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    names = {name for name, _ in samples(client)}
    assert names >= CONTRACT_METRICS
    version = client.get("/status").json()["version"]
    info = [labels for name, labels in samples(client) if name == "market_predictor_info"]
    assert ("version", version) in info[0]
    assert metric(client, "market_predictor_start_time_seconds") <= time.time()
    buckets = {
        dict(labels)["le"]
        for name, labels in samples(client)
        if name == "market_predictor_request_duration_seconds_bucket"
    }
    assert {"0.005", "1.0", "5.0", "+Inf"} <= buckets


def test_simulated_traffic_moves_the_metrics(client: httpx.Client) -> None:
    before = metric(client, "market_predictor_prediction_requests_total", code="200")
    time.sleep(0.5)
    after = metric(client, "market_predictor_prediction_requests_total", code="200")
    assert after - before >= 5
    last = metric(client, "market_predictor_last_prediction_timestamp_seconds")
    assert time.time() - last < 2


def test_predict_returns_a_prediction(client: httpx.Client) -> None:
    response = client.post("/predict", json={"symbol": "aapl"})
    assert response.status_code == 200
    body = response.json()
    assert body["symbol"] == "AAPL"
    assert body["direction"] in {"up", "down"}
    assert 0 < body["confidence"] < 1


def test_latency_fault_slows_predictions_without_failing_health(client: httpx.Client) -> None:
    def slow_count() -> float:
        return metric(client, "market_predictor_request_duration_seconds_count") - metric(
            client, "market_predictor_request_duration_seconds_bucket", le="1.0"
        )

    before = slow_count()
    inject(client, "latency", seconds=1.2)
    started = time.monotonic()
    assert client.post("/predict", json={"symbol": "MSFT"}).status_code == 200
    assert time.monotonic() - started >= 1.0
    assert slow_count() - before >= 1
    assert unhealthy_reasons(client) == []


def test_errors_fault_returns_500s_and_fails_health(client: httpx.Client) -> None:
    before = metric(client, "market_predictor_prediction_requests_total", code="500")
    inject(client, "errors", rate=1.0)
    response = client.post("/predict", json={"symbol": "MSFT"})
    assert response.status_code == 500
    assert metric(client, "market_predictor_prediction_requests_total", code="500") > before
    assert metric(client, "market_predictor_errors_total", kind="model_backend") >= 1
    assert any("model backend" in reason for reason in unhealthy_reasons(client))


def test_stale_data_fault_grows_feed_lag(client: httpx.Client) -> None:
    inject(client, "stale_data", lag_seconds=600)
    assert metric(client, "market_predictor_feed_lag_seconds") >= 600
    assert client.get("/status").json()["market_data"]["feed_lag_seconds"] >= 600
    assert any("stale" in reason for reason in unhealthy_reasons(client))
    client.post("/admin/recover")
    assert metric(client, "market_predictor_feed_lag_seconds") < 5
    assert unhealthy_reasons(client) == []


def test_accuracy_drop_fault_lowers_accuracy(client: httpx.Client) -> None:
    inject(client, "accuracy_drop")

    def accuracy() -> float | None:
        value = metric(client, "market_predictor_model_accuracy")
        return value if value < 0.7 else None

    assert wait_until(accuracy, 8, interval=0.2, message="accuracy < 0.7") > 0.3


def test_memory_leak_fault_grows_memory_and_recover_frees_it(client: httpx.Client) -> None:
    baseline = metric(client, "market_predictor_memory_bytes")
    inject(client, "memory_leak", mb_per_second=200, max_mb=150)

    def fully_leaked() -> bool:
        return client.get("/status").json()["memory"]["leaked_bytes"] == 150 * 2**20

    wait_until(fully_leaked, 8, message="150 MiB leaked")
    assert metric(client, "market_predictor_memory_bytes") - baseline > 140 * 2**20
    assert any("memory" in reason for reason in unhealthy_reasons(client))
    client.post("/admin/recover")
    assert metric(client, "market_predictor_memory_bytes") - baseline < 50 * 2**20
    assert unhealthy_reasons(client) == []


def test_recover_clears_every_fault(client: httpx.Client) -> None:
    inject(client, "latency", seconds=0.1)
    inject(client, "errors", rate=0.2)
    response = client.post("/admin/recover")
    assert response.json() == {"status": "recovered", "cleared": ["errors", "latency"]}
    assert client.get("/status").json()["faults"] == []


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", "/admin/fault", b'{"kind": "meteor"}', 400, "unknown fault kind"),
        ("POST", "/admin/fault", b"{not json", 400, "invalid JSON"),
        ("POST", "/admin/fault", b'{"kind": "latency", "secs": 1}', 400, "unknown parameter"),
        ("POST", "/admin/fault", b'{"kind": "errors", "rate": 2}', 400, "between"),
        ("POST", "/predict", b'{"symbol": 42}', 400, "symbol"),
        ("POST", "/predict", b"[]", 400, "symbol"),
        ("GET", "/nowhere", b"", 404, "no such endpoint"),
        ("GET", "/predict", b"", 405, "not allowed"),
        ("DELETE", "/health", b"", 405, "not allowed"),
    ],
)
def test_bad_requests_get_clear_errors(
    client: httpx.Client, method: str, path: str, body: bytes, status: int, message: str
) -> None:
    response = client.request(method, path, content=body)
    assert response.status_code == status
    assert message in response.json()["error"]
    if status == 405:
        assert response.headers["allow"]


def test_admin_token_guards_admin_and_crash_exits_non_zero(tmp_path: Path) -> None:
    port = free_port()
    with start_predictor(tmp_path, port, traffic_rps=0, admin_token="s3cret") as process:
        url = f"http://127.0.0.1:{port}"
        crash = {"kind": "crash"}
        assert httpx.post(f"{url}/admin/fault", json=crash).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert httpx.post(f"{url}/admin/recover", headers=wrong).status_code == 401
        assert httpx.get(f"{url}/health").status_code == 200
        good = {"Authorization": "Bearer s3cret"}
        response = httpx.post(f"{url}/admin/fault", json=crash, headers=good)
        assert response.status_code == 202
        assert response.json()["status"] == "crashing"
        assert process.wait(5) == 1


def test_start_fault_flag_and_sigterm_exit_cleanly(tmp_path: Path) -> None:
    port = free_port()
    process = start_predictor(tmp_path, port, traffic_rps=0, start_faults=["errors"])
    try:
        status = httpx.get(f"http://127.0.0.1:{port}/status").json()
        assert [fault["kind"] for fault in status["faults"]] == ["errors"]
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 503
    finally:
        assert process.stop(grace=5) == 0
