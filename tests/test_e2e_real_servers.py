"""End to end with real servers: predictor -> Prometheus -> Alertmanager -> `listen`.

The demo predictor, Debian's `prometheus` and `prometheus-alertmanager` (installed
when missing) run the project's own `prometheus/` configs rendered onto free loopback
ports with 1 s intervals; `market-agent listen` receives the webhooks with a bearer
token. Every process is started here (with `start_monitoring_stack`) and stopped by PID.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import MonitoringStack, start_monitoring_stack, start_predictor, wait_until

TOKEN = "e2e-listen-token-5d1c"


def audit_records(path: Path, kind: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == kind]


def notifications_about(path: Path, alertname: str, status: str) -> list[dict[str, Any]]:
    return [
        r
        for r in audit_records(path, "notification")
        if alertname in r["alertnames"] and r["status"] == status
    ]


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as exit_stack:
        yield exit_stack


@pytest.mark.slow
def test_predictor_down_reaches_listen_is_journaled_analysed_then_resolved(
    tmp_path: Path, stack: ExitStack
) -> None:
    audit = tmp_path / "audit.jsonl"

    def listen_argv(monitoring: MonitoringStack) -> list[str]:
        return [
            sys.executable, "-m", "market_agent", "--audit-log", str(audit), "listen",
            "--port", str(monitoring.ports["agent"]),
            "--token-file", str(monitoring.token_file), "--no-llm",
        ]  # fmt: skip

    monitoring = start_monitoring_stack(
        stack, tmp_path, token=TOKEN, traffic_rps=5, agent_argv=listen_argv
    )
    predictor, agent, agent_url = monitoring.predictor, monitoring.agent, monitoring.urls["agent"]

    # Prometheus scrapes the agent too (the scrape job in prometheus/prometheus.yml).
    prom = monitoring.urls["prometheus"]

    def agent_scraped() -> bool:
        query = {"query": 'up{job="market-agent"} == 1'}
        return bool(httpx.get(f"{prom}/api/v1/query", params=query).json()["data"]["result"])

    wait_until(agent_scraped, 20, message="Prometheus scraping market-agent")

    predictor.kill()
    firing = wait_until(
        lambda: notifications_about(audit, "PredictorDown", "firing"),
        30,
        message="PredictorDown notification journaled by listen",
    )[0]
    assert firing["source"] == "webhook"
    assert firing["payload"]["receiver"] == "market-agent"
    assert firing["payload"]["version"] == "4"

    def analysis_of_firing() -> list[dict[str, Any]]:
        return [a for a in audit_records(audit, "analysis") if a["notification_id"] == firing["id"]]

    (analysis,) = wait_until(analysis_of_firing, 10, message="analysis of PredictorDown")
    assert analysis["proposed_action"] == "restart"
    assert analysis["severity"] == "critical"
    assert analysis["issue_type"] == "availability"
    assert analysis["analyzer"] == "rules"

    restarted = start_predictor(tmp_path, monitoring.ports["predictor"], traffic_rps=5)
    stack.callback(restarted.stop)
    resolved = wait_until(
        lambda: notifications_about(audit, "PredictorDown", "resolved"),
        30,
        message="resolved PredictorDown notification journaled by listen",
    )[0]
    assert all(a["status"] == "resolved" for a in resolved["payload"]["alerts"])

    # Alertmanager authenticated every time: nothing was refused for the token.
    metrics = httpx.get(f"{agent_url}/metrics").text
    assert 'market_agent_notifications_rejected_total{reason="unauthorized"} 0.0' in metrics
    assert 'market_agent_notifications_received_total{status="firing"}' in metrics
    assert "Traceback" not in agent.log_tail(200)
    assert TOKEN not in agent.log_path.read_text()
