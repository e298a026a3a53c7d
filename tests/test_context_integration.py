"""Enrichment against a real Prometheus scraping the demo predictor (child processes
on free loopback ports)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from market_agent.analysis.live_context import gather_context
from market_agent.clients import PredictorClient, PrometheusClient
from market_agent.models import Notification
from market_agent.settings import EndpointSettings
from tests.cli_helpers import run_cli
from tests.helpers import ManagedProcess, scraped_predictor, wait_until

pytestmark = pytest.mark.slow
MANAGED = [{"job": "market-predictor"}, {"service": "market-predictor"}]


@dataclass
class Live:
    predictor: PredictorClient
    prometheus: PrometheusClient
    predictor_process: ManagedProcess
    instance: str

    def context(self, alertname: str) -> dict:
        labels = {"alertname": alertname, "job": "market-predictor", "instance": self.instance}
        note = Notification.model_validate(
            {"status": "firing", "alerts": [{"labels": labels, "annotations": {}}]}
        )
        return gather_context(
            note,
            predictor=self.predictor,
            prometheus=self.prometheus,
            managed_service=MANAGED,
            timeout=3.0,
        )


@pytest.fixture
def live(tmp_path, monkeypatch) -> Iterator[Live]:
    with scraped_predictor(tmp_path) as (predictor_port, prometheus_port, process):
        predictor_url = f"http://127.0.0.1:{predictor_port}"
        prometheus_url = f"http://127.0.0.1:{prometheus_port}"
        monkeypatch.setenv("MARKET_AGENT_PREDICTOR__URL", predictor_url)
        monkeypatch.setenv("MARKET_AGENT_PROMETHEUS__URL", prometheus_url)
        prometheus = PrometheusClient(EndpointSettings(url=prometheus_url))
        predictor = PredictorClient(EndpointSettings(url=predictor_url))
        yield Live(predictor, prometheus, process, f"127.0.0.1:{predictor_port}")
        predictor.close()
        prometheus.close()


def test_context_of_a_healthy_predictor(live):
    context = live.context("PredictorHighLatency")
    assert context["predictor"]["reachable"] is True
    assert context["predictor"]["healthy"] is True
    metrics = context["metrics"]
    assert metrics["up"] == 1.0
    assert 0.5 < metrics["accuracy"] <= 1.0
    assert 0 <= metrics["feed_lag_seconds"] < 5
    low, high = metrics["over_window"]["accuracy"].values()
    assert low <= metrics["accuracy"] <= high
    assert metrics["labels"] == {"job": "market-predictor", "instance": live.instance}
    assert context["sources"]["prometheus"] == {"ok": True, "error": None, "kind": None}
    json.dumps(context, allow_nan=False)


def test_stale_feed_is_told_apart_from_a_model_problem(live, tmp_path):
    fault = {"kind": "stale_data", "lag_seconds": 900}
    httpx.post(f"{live.predictor.base_url}/admin/fault", json=fault, timeout=5).raise_for_status()
    lag = 'market_predictor_feed_lag_seconds{job="market-predictor"}'
    wait_until(lambda: (live.prometheus.query_value(lag) or 0) > 300, 15, message="lag scraped")

    context = live.context("PredictorAccuracyDrop")
    assert context["metrics"]["feed_lag_seconds"] > 300
    assert context["predictor"]["healthy"] is False
    assert any("stale" in reason for reason in context["predictor"]["reasons"])

    alert = {
        "status": "firing",
        "alerts": [
            {
                "labels": {
                    "alertname": "PredictorAccuracyDrop",
                    "job": "market-predictor",
                    "instance": live.instance,
                    "severity": "warning",
                },
                "annotations": {"summary": "Model accuracy dropped to 60%"},
            }
        ],
    }
    path = tmp_path / "alert.json"
    path.write_text(json.dumps(alert))
    result = run_cli("analyze", "--no-llm", "--context", "--json", str(path))
    [analysis] = result.json_lines()
    assert analysis["issue_type"] == "data"
    assert "feed" in analysis["description"]


def test_a_stopped_predictor_is_unreachable_and_down(live):
    live.predictor_process.stop()
    wait_until(
        lambda: live.prometheus.holds('up{job="market-predictor"} == 0'),
        15,
        message="Prometheus sees the predictor down",
    )
    context = live.context("PredictorDown")
    assert context["predictor"]["reachable"] is False
    assert context["predictor"]["error_kind"] == "connection_refused"
    assert context["metrics"]["up"] == 0.0
    assert context["metrics"]["over_window"]["up"]["min"] == 0.0
    assert context["metrics"]["accuracy"] is None  # its series went stale with the target
