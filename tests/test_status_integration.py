"""`market-agent status` as a whole process against real services: the demo predictor,
Debian's Prometheus (scraping it) and Alertmanager, all on free loopback ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import pytest

from tests.helpers import (
    ManagedProcess,
    free_port,
    start_monitoring_stack,
    start_predictor,
    wait_until,
)

pytestmark = pytest.mark.slow


@dataclass
class Stack:
    predictor: str
    prometheus: str
    alertmanager: str
    predictor_process: ManagedProcess


def run_status(stack: Stack, *args: str) -> tuple[int, dict]:
    env = {
        "MARKET_AGENT_PREDICTOR__URL": stack.predictor,
        "MARKET_AGENT_PROMETHEUS__URL": stack.prometheus,
        "MARKET_AGENT_ALERTMANAGER__URL": stack.alertmanager,
    }
    completed = subprocess.run(
        [sys.executable, "-m", "market_agent", "status", "--json", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.stderr == ""
    return completed.returncode, json.loads(completed.stdout)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("status-stack")
    with ExitStack() as exit_stack:
        monitoring = start_monitoring_stack(exit_stack, tmp_path, traffic_rps=20)
        urls = monitoring.urls
        query = f"{urls['prometheus']}/api/v1/query"
        rate = 'sum(rate(market_predictor_prediction_requests_total{job="market-predictor"}[5m]))'
        wait_until(
            lambda: httpx.get(query, params={"query": rate}, timeout=2).json()["data"]["result"],
            30,
            message="a request rate for the predictor in Prometheus",
        )
        predictor = monitoring.predictor
        yield Stack(urls["predictor"], urls["prometheus"], urls["alertmanager"], predictor)


def test_all_healthy_exits_0(stack):
    code, report = run_status(stack)
    assert code == 0, report["problems"]
    assert report["overall"] == "healthy"
    predictor = report["predictor"]
    assert (predictor["state"], predictor["version"]) == ("healthy", "1.4.2")
    assert predictor["uptime_seconds"] > 0
    assert predictor["response_time_ms"] > 0
    prometheus = report["prometheus"]
    assert prometheus["target"]["health"] == "up"
    assert prometheus["target"]["scrape_url"] == f"{stack.predictor}/metrics"
    assert prometheus["request_rate"] > 0
    assert prometheus["error_ratio"] == 0
    assert 0 < prometheus["p95_latency_seconds"] < 1
    assert report["alertmanager"]["state"] == "healthy"
    assert report["alertmanager"]["version"]


def test_failing_predictor_exits_1(stack):
    admin = f"{stack.predictor}/admin"
    httpx.post(f"{admin}/fault", json={"kind": "errors", "rate": 1.0}, timeout=5).raise_for_status()
    try:
        code, report = run_status(stack)
    finally:
        httpx.post(f"{admin}/recover", timeout=5).raise_for_status()
    assert code == 1
    assert report["overall"] == "unhealthy"
    assert report["predictor"]["state"] == "unhealthy"
    assert "model backend failing" in report["predictor"]["reasons"][0]
    assert report["predictor"]["version"] == "1.4.2"


def test_predictor_alone_then_gone(tmp_path):
    port = free_port()
    stack = Stack(
        f"http://127.0.0.1:{port}",
        f"http://127.0.0.1:{free_port()}",
        f"http://127.0.0.1:{free_port()}",
        start_predictor(tmp_path, port, traffic_rps=0),
    )
    with stack.predictor_process:
        code, report = run_status(stack)
        assert code == 1
        assert report["overall"] == "degraded"  # healthy predictor, no monitoring
        assert report["predictor"]["state"] == "healthy"
        assert report["prometheus"]["error"]["kind"] == "connection_refused"
    code, report = run_status(stack)
    assert code == 1
    assert report["overall"] == "unhealthy"
    assert report["predictor"]["state"] == "unreachable"
