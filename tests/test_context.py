"""Enrichment: `gather_context` and `analyze --context`, services mocked with pytest-httpx
(time bounds with real loopback sockets)."""

from __future__ import annotations

import json
import socket
import time
from datetime import datetime

import httpx
import pytest

from market_agent.analysis.live_context import METRICS, ContextGatherer, gather_context
from market_agent.clients import PredictorClient, PrometheusClient, RetryPolicy
from market_agent.models import Notification
from market_agent.settings import EndpointSettings
from tests.cli_helpers import run_cli

PREDICTOR, PROMETHEUS = "http://predictor.test:8000", "http://prometheus.test:9090"
MANAGED = [{"job": "market-predictor"}, {"service": "market-predictor"}]
FAST = RetryPolicy(initial_wait=0.01, max_wait=0.02, jitter=0)


def notification(**labels: str) -> Notification:
    alert_labels = {"alertname": "PredictorDown", "severity": "critical", **labels}
    return Notification.model_validate(
        {
            "status": "firing",
            "groupKey": "g",
            "alerts": [{"labels": alert_labels, "annotations": {"summary": "predictor down"}}],
        }
    )


class Services:
    """Answers for the predictor and Prometheus; range queries echo the asked window."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.health: tuple[int, dict] = (200, {"status": "healthy", "version": "1.4.2"})
        self.values = {
            "up": "1",
            "error_ratio": "0.02",
            "p95_latency_seconds": "0.05",
            "feed_lag_seconds": "1.5",
            "accuracy": "0.9",
        }
        #: metric -> seconds before the window's end at which its series stops
        self.stops: dict[str, float] = {}
        self.failing: dict[str, str] = {}
        self.queries: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if f"{request.url.scheme}://{request.url.netloc.decode()}" in self.down:
            raise httpx.ConnectError("[Errno 111] Connection refused")
        if request.url.host == "predictor.test":
            return httpx.Response(self.health[0], json=self.health[1])
        params = request.url.params
        query = params["query"]
        self.queries.append(query)
        name = _metric_of(query)
        if name in self.failing:
            body = {"status": "error", "errorType": "execution", "error": self.failing[name]}
            return httpx.Response(422, json=body)
        start, end = _timestamp(params["start"]), _timestamp(params["end"])
        step = float(params["step"])
        last = end - self.stops.get(name, 0)
        points = []
        t = start
        while t <= last:
            points.append([t, self.values[name]])
            t += step
        points[0][1] = "0" if name == "up" else points[0][1]  # a dip early in the window
        result = [{"metric": {}, "values": points}] if self.values[name] != "none" else []
        return httpx.Response(
            200, json={"status": "success", "data": {"resultType": "matrix", "result": result}}
        )


def _timestamp(value: str) -> float:
    """Prometheus takes RFC 3339 or Unix time."""
    try:
        return float(value)
    except ValueError:
        return datetime.fromisoformat(value).timestamp()


def _metric_of(query: str) -> str:
    if "duration" in query:
        return "p95_latency_seconds"
    if "5.." in query:
        return "error_ratio"
    if "feed_lag" in query:
        return "feed_lag_seconds"
    if "accuracy" in query:
        return "accuracy"
    return "up"


@pytest.fixture
def services(httpx_mock) -> Services:
    fake = Services()
    httpx_mock.add_callback(fake, is_reusable=True)
    return fake


@pytest.fixture
def clients() -> tuple[PredictorClient, PrometheusClient]:
    return (
        PredictorClient(EndpointSettings(url=PREDICTOR, timeout=2.0), retry=FAST),
        PrometheusClient(EndpointSettings(url=PROMETHEUS, timeout=2.0), retry=FAST),
    )


def gather(clients, note: Notification, timeout: float = 2.0) -> dict:
    predictor, prometheus = clients
    return gather_context(
        note,
        predictor=predictor,
        prometheus=prometheus,
        managed_service=MANAGED,
        timeout=timeout,
    )


def test_shape_with_everything_answering(services, clients):
    context = gather(clients, notification(job="market-predictor", instance="10.0.0.5:8000"))
    assert set(context) == {
        "gathered_at",
        "elapsed_ms",
        "timeout_seconds",
        "predictor",
        "metrics",
        "sources",
    }
    predictor = context["predictor"]
    assert predictor["reachable"] is True
    assert predictor["healthy"] is True
    assert predictor["error"] is None
    assert predictor["version"] == "1.4.2"
    assert predictor["url"] == PREDICTOR
    metrics = context["metrics"]
    assert {k: metrics[k] for k in METRICS} == {
        "up": 1.0,
        "error_ratio": 0.02,
        "p95_latency_seconds": 0.05,
        "feed_lag_seconds": 1.5,
        "accuracy": 0.9,
    }
    assert metrics["over_window"]["up"] == {"min": 0.0, "max": 1.0}
    assert metrics["labels"] == {"job": "market-predictor", "instance": "10.0.0.5:8000"}
    window = metrics["window"]
    start = datetime.fromisoformat(window["start"])
    end = datetime.fromisoformat(window["end"])
    assert (end - start).total_seconds() == 900
    assert window["step_seconds"] == 15
    assert metrics["errors"] == {}
    assert context["sources"] == {
        "predictor": {"ok": True, "error": None, "kind": None},
        "prometheus": {"ok": True, "error": None, "kind": None},
    }
    json.dumps(context, allow_nan=False)  # JSON-safe, no NaN


def test_queries_are_scoped_to_the_alert_with_quoted_labels(services, clients):
    gather(clients, notification(job="market-predictor", instance='x"} or vector(1) #'))
    assert len(services.queries) == len(METRICS)
    for query in services.queries:
        assert 'job="market-predictor",instance="x\\"} or vector(1) #"' in query


def test_alerts_without_job_use_the_managed_job(services, clients):
    context = gather(clients, notification(service="market-predictor"))
    assert context["metrics"]["labels"] == {"job": "market-predictor"}


def test_unreachable_predictor_is_recorded_not_raised(services, clients):
    services.down.add(PREDICTOR)
    context = gather(clients, notification(job="market-predictor"))
    predictor = context["predictor"]
    assert predictor["reachable"] is False
    assert predictor["healthy"] is None
    assert predictor["error"] == "connection refused"
    assert predictor["error_kind"] == "connection_refused"
    assert context["sources"]["predictor"] == {
        "ok": False,
        "error": "connection refused",
        "kind": "connection_refused",
    }
    assert context["metrics"]["up"] == 1.0


def test_unhealthy_predictor(services, clients):
    services.health = (503, {"status": "unhealthy", "reasons": ["market data stale"]})
    predictor = gather(clients, notification(job="market-predictor"))["predictor"]
    assert (predictor["reachable"], predictor["healthy"]) == (True, False)
    assert predictor["reasons"] == ["market data stale"]
    assert predictor["status_code"] == 503


def test_unreachable_prometheus_is_recorded_once(services, clients):
    services.down.add(PROMETHEUS)
    context = gather(clients, notification(job="market-predictor"))
    assert all(context["metrics"][name] is None for name in METRICS)
    assert context["metrics"]["errors"] == {}
    assert context["sources"]["prometheus"] == {
        "ok": False,
        "error": "connection refused",
        "kind": "connection_refused",
    }


def test_one_failing_query_is_named(services, clients):
    services.failing["p95_latency_seconds"] = "too many samples"
    context = gather(clients, notification(job="market-predictor"))
    assert context["metrics"]["p95_latency_seconds"] is None
    assert "too many samples" in context["metrics"]["errors"]["p95_latency_seconds"]
    assert context["metrics"]["accuracy"] == 0.9
    assert context["sources"]["prometheus"]["ok"] is True
    assert context["sources"]["prometheus"]["kind"] == "http_status"


def test_a_series_that_stopped_has_no_current_value(services, clients):
    services.stops["accuracy"] = 300  # last sample 5 minutes before the end
    services.values["error_ratio"] = "NaN"  # no traffic
    services.values["feed_lag_seconds"] = "none"  # no series at all
    metrics = gather(clients, notification(job="market-predictor"))["metrics"]
    assert metrics["accuracy"] is None
    assert metrics["over_window"]["accuracy"] == {"min": 0.9, "max": 0.9}
    assert metrics["error_ratio"] is None
    assert metrics["feed_lag_seconds"] is None
    assert metrics["over_window"]["feed_lag_seconds"] is None


def test_alerts_about_other_services_get_no_context(httpx_mock, clients):
    context = gather(clients, notification(job="database"))
    assert context == {"skipped": "no alert in this notification concerns the managed service"}
    assert httpx_mock.get_requests() == []


def test_gatherer_is_a_context_provider(services, clients):
    predictor, prometheus = clients
    gatherer = ContextGatherer(predictor, prometheus, managed_service=MANAGED, timeout=1.0)
    context = gatherer(notification(job="market-predictor"))
    assert context["timeout_seconds"] == 1.0
    assert context["predictor"]["reachable"] is True


def test_enrichment_adds_at_most_its_timeout():
    with socket.socket() as silent, socket.socket() as refused:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # accepts, never answers
        refused.bind(("127.0.0.1", 0))
        refused_port = refused.getsockname()[1]
        refused.close()
        clients = (
            PredictorClient(EndpointSettings(url=f"http://127.0.0.1:{refused_port}")),
            PrometheusClient(EndpointSettings(url=f"http://127.0.0.1:{silent.getsockname()[1]}")),
        )
        started = time.monotonic()
        context = gather(clients, notification(job="market-predictor"), timeout=0.5)
        elapsed = time.monotonic() - started
    assert elapsed < 0.5 + 0.25
    assert context["predictor"]["reachable"] is False
    assert context["sources"]["prometheus"]["kind"] == "timeout"


# Through `analyze --context` and the rule analyzer --------------------------------


@pytest.fixture
def alert_file(tmp_path):
    path = tmp_path / "alert.json"
    note = {
        "status": "firing",
        "groupKey": "g",
        "alerts": [
            {
                "labels": {
                    "alertname": "PredictorHighErrorRate",
                    "job": "market-predictor",
                    "service": "market-predictor",
                    "severity": "warning",
                },
                "annotations": {"summary": "Market Predictor is failing 9% of predictions"},
            }
        ],
    }
    path.write_text(json.dumps(note))
    return path


@pytest.fixture
def pointed(monkeypatch):
    monkeypatch.setenv("MARKET_AGENT_PREDICTOR__URL", PREDICTOR)
    monkeypatch.setenv("MARKET_AGENT_PROMETHEUS__URL", PROMETHEUS)


def test_analyze_context_reaches_json_output_and_audit_log(
    services, pointed, alert_file, audit_path
):
    result = run_cli("analyze", "--no-llm", "--context", "--json", str(alert_file))
    assert result.exit_code == 0, result.stderr
    [analysis] = result.json_lines()
    assert analysis["context"]["predictor"]["reachable"] is True
    assert analysis["context"]["metrics"]["error_ratio"] == 0.02
    records = [json.loads(line) for line in audit_path.read_text().splitlines()]
    [audited] = [r for r in records if r["kind"] == "analysis"]
    assert audited["context"]["metrics"]["error_ratio"] == 0.02


def test_rules_raise_severity_when_the_predictor_is_unreachable(services, pointed, alert_file):
    services.down.add(PREDICTOR)
    result = run_cli("analyze", "--no-llm", "--context", "--json", str(alert_file))
    [analysis] = result.json_lines()
    assert analysis["severity"] == "critical"
    assert analysis["issue_type"] == "availability"
    assert "unreachable" in analysis["description"]


def test_rules_tell_a_feed_outage_apart(services, pointed, alert_file):
    services.values["feed_lag_seconds"] = "900"
    result = run_cli("analyze", "--no-llm", "--context", "--json", str(alert_file))
    [analysis] = result.json_lines()
    assert analysis["issue_type"] == "data"
    assert "feed" in analysis["description"]


def test_context_from_config_and_no_context_flag(httpx_mock, pointed, alert_file, tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text("[analysis]\ncontext = true\n")
    result = run_cli(
        "--config", str(config), "analyze", "--no-llm", "--no-context", "--json", str(alert_file)
    )
    [analysis] = result.json_lines()
    assert analysis["context"] == {}
    assert httpx_mock.get_requests() == []


def test_without_context_no_service_is_called(httpx_mock, pointed, alert_file):
    result = run_cli("analyze", "--no-llm", "--json", str(alert_file))
    assert result.exit_code == 0
    assert httpx_mock.get_requests() == []
