"""PredictorClient against pytest-httpx: /health, /status, /metrics; its PromQL."""

from __future__ import annotations

import pytest

from market_agent.clients import (
    ClientError,
    FailureKind,
    PredictorClient,
    RetryPolicy,
    predictor_query,
    scrape_labels,
)
from market_agent.settings import EndpointSettings

URL = "http://predictor.test:8000"


@pytest.fixture
def predictor() -> PredictorClient:
    retry = RetryPolicy(initial_wait=0.01, max_wait=0.02, jitter=0)
    return PredictorClient(EndpointSettings(url=URL, timeout=2.0), retry=retry)


def test_healthy(httpx_mock, predictor):
    httpx_mock.add_response(
        url=f"{URL}/health", json={"status": "healthy", "version": "1.4.2", "uptime": 12.5}
    )
    health = predictor.health()
    assert health.healthy is True
    assert (health.status_code, health.status, health.version) == (200, "healthy", "1.4.2")
    assert health.uptime_seconds == 12.5
    assert health.reasons == ()
    assert health.response_time_seconds >= 0


def test_unhealthy_503_is_an_answer_not_a_failure(httpx_mock, predictor):
    body = {"status": "unhealthy", "reasons": ["market data stale: feed lag 400s > 300s"]}
    httpx_mock.add_response(url=f"{URL}/health", status_code=503, json=body)
    health = predictor.health()
    assert health.healthy is False
    assert health.status == "unhealthy"
    assert health.reasons == ("market data stale: feed lag 400s > 300s",)
    assert len(httpx_mock.get_requests()) == 1  # not retried


def test_200_with_a_plain_text_body_is_healthy(httpx_mock, predictor):
    httpx_mock.add_response(url=f"{URL}/health", text="OK")
    assert predictor.health().healthy is True


def test_200_that_says_it_is_not_healthy(httpx_mock, predictor):
    httpx_mock.add_response(url=f"{URL}/health", json={"status": "degraded"})
    assert predictor.health().healthy is False


def test_503_without_the_predictor_body_is_invalid(httpx_mock, predictor):
    httpx_mock.add_response(url=f"{URL}/health", status_code=503, html="<h1>Bad gateway</h1>")
    with pytest.raises(ClientError) as caught:
        predictor.health()
    assert caught.value.kind is FailureKind.INVALID_BODY


def test_other_statuses_are_http_errors(httpx_mock, predictor):
    httpx_mock.add_response(url=f"{URL}/health", status_code=404, json={"error": "no such"})
    with pytest.raises(ClientError) as caught:
        predictor.health()
    assert (caught.value.kind, caught.value.status_code) == (FailureKind.HTTP_STATUS, 404)
    assert caught.value.message.startswith(f"predictor at {URL}: HTTP 404 for GET /health")


def test_status_document(httpx_mock, predictor):
    httpx_mock.add_response(url=f"{URL}/status", json={"version": "1.4.2", "faults": []})
    assert predictor.status() == {"version": "1.4.2", "faults": []}


def test_status_must_be_an_object(httpx_mock, predictor):
    httpx_mock.add_response(url=f"{URL}/status", json=[1, 2])
    with pytest.raises(ClientError, match="expected a JSON object"):
        predictor.status()


def test_metrics_text(httpx_mock, predictor):
    httpx_mock.add_response(url=f"{URL}/metrics", text="market_predictor_info 1\n")
    assert predictor.metrics() == "market_predictor_info 1\n"


def test_predictor_queries_quote_label_values():
    query = predictor_query("error_ratio", {"job": "market-predictor", "instance": 'a"b\\c'})
    assert 'instance="a\\"b\\\\c"' in query
    assert 'code=~"5.."' in query
    assert "[5m]" in query


def test_predictor_query_needs_a_label():
    with pytest.raises(ValueError, match="at least one label"):
        predictor_query("up", {})


@pytest.mark.parametrize(
    ("managed", "labels"),
    [
        (
            [{"job": "market-predictor"}, {"service": "market-predictor"}],
            {"job": "market-predictor"},
        ),
        ([{"service": "svc"}, {"job": "j", "env": "prod"}], {"job": "j"}),
        ([{"service": "svc"}], {"service": "svc"}),
        ([], {"job": "market-predictor"}),
    ],
)
def test_scrape_labels_prefer_the_job(managed, labels):
    assert scrape_labels(managed) == labels
