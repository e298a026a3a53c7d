"""PrometheusClient: unit tests against pytest-httpx, then a real Prometheus."""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime, timedelta

import pytest

from market_agent.clients import (
    ClientError,
    FailureKind,
    PrometheusClient,
    PromQLError,
    RetryPolicy,
    label_selector,
)
from market_agent.errors import ConfigError
from market_agent.settings import EndpointSettings

URL = "http://prometheus.test:9090"
QUERY = re.compile(re.escape(f"{URL}/api/v1/query?") + ".*")


@pytest.fixture
def prometheus() -> PrometheusClient:
    retry = RetryPolicy(initial_wait=0.01, max_wait=0.02, jitter=0)
    return PrometheusClient(EndpointSettings(url=URL, timeout=2.0), retry=retry)


def vector(*samples: tuple[dict, str]) -> dict:
    result = [{"metric": labels, "value": [1700000000.5, value]} for labels, value in samples]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def test_instant_query(httpx_mock, prometheus):
    httpx_mock.add_response(url=QUERY, json=vector(({"job": "a"}, "1"), ({"job": "b"}, "0")))
    samples = prometheus.query('up{job=~".+"}')
    assert [(s.labels, s.value, s.timestamp) for s in samples] == [
        ({"job": "a"}, 1.0, 1700000000.5),
        ({"job": "b"}, 0.0, 1700000000.5),
    ]
    request = httpx_mock.get_requests()[0]
    assert request.url.params["query"] == 'up{job=~".+"}'


def test_query_at_a_time(httpx_mock, prometheus):
    httpx_mock.add_response(url=QUERY, json=vector())
    prometheus.query("up", at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert httpx_mock.get_requests()[0].url.params["time"] == "2026-01-02T03:04:05+00:00"


def test_scalar_result(httpx_mock, prometheus):
    body = {"status": "success", "data": {"resultType": "scalar", "result": [1.5, "42"]}}
    httpx_mock.add_response(url=QUERY, json=body)
    assert prometheus.query_value("scalar(42)") == 42.0


def test_query_value_nan_and_empty(httpx_mock, prometheus):
    httpx_mock.add_response(url=QUERY, json=vector(({}, "NaN")))
    httpx_mock.add_response(url=QUERY, json=vector())
    assert math.isnan(prometheus.query_value("0/0"))
    assert prometheus.query_value("absent_metric") is None


def test_query_value_refuses_several_series(httpx_mock, prometheus):
    httpx_mock.add_response(url=QUERY, json=vector(({"i": "1"}, "1"), ({"i": "2"}, "1")))
    with pytest.raises(ConfigError, match=r"returned 2 series .* max\(\.\.\.\)"):
        prometheus.query_value("up")


def test_holds(httpx_mock, prometheus):
    httpx_mock.add_response(url=QUERY, json=vector(({"job": "a"}, "1")))
    httpx_mock.add_response(url=QUERY, json=vector())
    assert prometheus.holds('up{job="a"} == 1') is True
    assert prometheus.holds('up{job="a"} == 1') is False


@pytest.mark.parametrize(
    ("status", "error_type", "message"),
    [
        (400, "bad_data", 'invalid parameter "query": 1:4: parse error: unexpected <EOF>'),
        (422, "execution", "query processing would load too many samples into memory"),
    ],
)
def test_promql_errors_carry_prometheus_message(
    httpx_mock, prometheus, status, error_type, message
):
    body = {"status": "error", "errorType": error_type, "error": message}
    httpx_mock.add_response(url=QUERY, status_code=status, json=body)
    with pytest.raises(PromQLError) as caught:
        prometheus.query("up{")
    assert caught.value.status_code == status
    assert f"{error_type}: {message}" in caught.value.message
    assert len(httpx_mock.get_requests()) == 1


def test_a_range_vector_from_an_instant_query_is_refused(httpx_mock, prometheus):
    body = {"status": "success", "data": {"resultType": "matrix", "result": []}}
    httpx_mock.add_response(url=QUERY, json=body)
    with pytest.raises(PromQLError, match="expected an instant vector, got matrix"):
        prometheus.query("up[5m]")


@pytest.mark.parametrize(
    "body",
    [
        {"status": "success"},
        [1, 2],
        {"status": "success", "data": {"resultType": "vector", "result": [{"value": "x"}]}},
        {"status": "success", "data": {"resultType": "vector", "result": ["x"]}},
    ],
)
def test_malformed_answers_are_invalid_bodies(httpx_mock, prometheus, body):
    httpx_mock.add_response(url=QUERY, json=body)
    with pytest.raises(ClientError) as caught:
        prometheus.query("up")
    assert caught.value.kind is FailureKind.INVALID_BODY


def test_range_query(httpx_mock, prometheus):
    body = {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [{"metric": {"job": "a"}, "values": [[100, "1"], [160, "0"]]}],
        },
    }
    httpx_mock.add_response(
        url=re.compile(re.escape(f"{URL}/api/v1/query_range?") + ".*"), json=body
    )
    series = prometheus.query_range("up", start=100.0, end=160.0, step=60)
    assert series[0].labels == {"job": "a"}
    assert series[0].points == ((100.0, 1.0), (160.0, 0.0))
    params = httpx_mock.get_requests()[0].url.params
    assert (params["start"], params["end"], params["step"]) == ("100.000", "160.000", "60")


def test_alerts(httpx_mock, prometheus):
    alert = {
        "labels": {"alertname": "PredictorDown", "severity": "critical"},
        "annotations": {"summary": "down"},
        "state": "firing",
        "activeAt": "2026-01-01T00:00:00Z",
        "value": "0e+00",
    }
    body = {"status": "success", "data": {"alerts": [alert]}}
    httpx_mock.add_response(url=f"{URL}/api/v1/alerts", json=body)
    [rule_alert] = prometheus.alerts()
    assert rule_alert.labels["alertname"] == "PredictorDown"
    assert (rule_alert.state, rule_alert.value) == ("firing", 0.0)
    assert rule_alert.annotations == {"summary": "down"}


def test_targets(httpx_mock, prometheus):
    target = {
        "labels": {"job": "market-predictor", "instance": "127.0.0.1:8000"},
        "scrapePool": "market-predictor",
        "scrapeUrl": "http://127.0.0.1:8000/metrics",
        "health": "down",
        "lastError": "connection refused",
        "lastScrape": "2026-01-01T00:00:00Z",
    }
    body = {"status": "success", "data": {"activeTargets": [target], "droppedTargets": []}}
    httpx_mock.add_response(url=f"{URL}/api/v1/targets?state=active", json=body)
    [found] = prometheus.targets()
    assert (found.health, found.last_error) == ("down", "connection refused")
    assert found.scrape_url == "http://127.0.0.1:8000/metrics"


@pytest.mark.parametrize(("status", "ready"), [(200, True), (503, False)])
def test_ready(httpx_mock, prometheus, status, ready):
    httpx_mock.add_response(url=f"{URL}/-/ready", status_code=status, text="...")
    assert prometheus.ready() is ready


def test_label_selector_escapes_untrusted_values():
    hostile = '"} or vector(1) or up{x="'
    selector = label_selector({"job": "j", "instance": hostile})
    assert selector == 'job="j",instance="\\"} or vector(1) or up{x=\\""'


def test_label_selector_rejects_bad_label_names():
    with pytest.raises(ValueError, match="label name"):
        label_selector({"bad-name": "x"})


# A real Prometheus scraping the demo predictor --------------------------------------


@pytest.fixture(scope="module")
def real_stack(tmp_path_factory):
    from tests.helpers import scraped_predictor

    tmp_path = tmp_path_factory.mktemp("prometheus-client")
    with scraped_predictor(tmp_path) as (predictor_port, prometheus_port, _):
        client = PrometheusClient(EndpointSettings(url=f"http://127.0.0.1:{prometheus_port}"))
        yield client, predictor_port
        client.close()


@pytest.mark.slow
def test_real_instant_query_and_targets(real_stack):
    client, predictor_port = real_stack
    assert client.ready() is True
    assert client.query_value('up{job="market-predictor"}') == 1.0
    [target] = [t for t in client.targets() if t.labels.get("job") == "market-predictor"]
    assert target.health == "up"
    assert target.scrape_url == f"http://127.0.0.1:{predictor_port}/metrics"
    accuracy = client.query_value('market_predictor_model_accuracy{job="market-predictor"}')
    assert accuracy is not None and 0 < accuracy <= 1


@pytest.mark.slow
def test_real_range_query(real_stack):
    client, _ = real_stack
    end = time.time()
    series = client.query_range('up{job="market-predictor"}', start=end - 10, end=end, step=1)
    assert len(series) == 1
    assert series[0].points and all(value == 1.0 for _, value in series[0].points)


@pytest.mark.slow
def test_real_promql_error_is_prometheus_own_message(real_stack):
    client, _ = real_stack
    with pytest.raises(PromQLError) as caught:
        client.query("sum(rate(up[5m])")
    assert caught.value.status_code == 400
    assert "bad_data" in caught.value.detail
    assert "parse error" in caught.value.detail


@pytest.mark.slow
def test_real_alerts_endpoint(real_stack):
    client, _ = real_stack
    assert isinstance(client.alerts(), list)  # nothing fires on a healthy predictor
    assert all(a.labels.get("alertname") != "PredictorDown" for a in client.alerts())


@pytest.mark.slow
def test_real_query_at_a_past_time(real_stack):
    client, _ = real_stack
    before_start = datetime.now(UTC) - timedelta(hours=1)
    assert client.query('up{job="market-predictor"}', at=before_start) == []
