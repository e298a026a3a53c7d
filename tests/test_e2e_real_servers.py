"""End to end with real servers: predictor -> Prometheus -> Alertmanager -> `listen`.

The demo predictor, Debian's `prometheus` and `prometheus-alertmanager` (installed
when missing) run the project's own `prometheus/` configs rendered onto free loopback
ports with 1 s intervals; `market-agent listen` receives the webhooks with a bearer
token. Every process is started here and stopped by PID.
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

from tests.helpers import (
    ManagedProcess,
    free_port,
    render_monitoring_configs,
    start_alertmanager,
    start_predictor,
    start_prometheus,
    wait_until,
)

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
    ports = {name: free_port() for name in ("predictor", "agent", "alertmanager", "prometheus")}
    token_file = tmp_path / "webhook-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    audit = tmp_path / "audit.jsonl"
    configs = render_monitoring_configs(
        tmp_path,
        predictor_port=ports["predictor"],
        agent_port=ports["agent"],
        alertmanager_port=ports["alertmanager"],
        token_file=token_file,
    )
    agent_url = f"http://127.0.0.1:{ports['agent']}"
    agent_argv = [
        sys.executable, "-m", "market_agent", "--audit-log", str(audit), "listen",
        "--port", str(ports["agent"]), "--token-file", str(token_file), "--no-llm",
    ]  # fmt: skip
    agent = stack.enter_context(ManagedProcess(agent_argv, log_path=tmp_path / "listen.log"))
    agent.wait_for_http(f"{agent_url}/readyz", timeout=20)
    predictor = stack.enter_context(start_predictor(tmp_path, ports["predictor"], traffic_rps=5))
    stack.enter_context(start_alertmanager(tmp_path, configs.alertmanager, ports["alertmanager"]))
    stack.enter_context(start_prometheus(tmp_path, configs.prometheus, ports["prometheus"]))

    # Prometheus scrapes the agent too (the scrape job in prometheus/prometheus.yml).
    prom = f"http://127.0.0.1:{ports['prometheus']}"

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

    restarted = start_predictor(tmp_path, ports["predictor"], traffic_rps=5)
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
    assert TOKEN not in (tmp_path / "listen.log").read_text()
