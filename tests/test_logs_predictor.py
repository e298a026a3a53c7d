"""The `file` backend on the demo predictor's real log (`--log-file`), fault by fault.

Each fault mode writes its own signature: out of memory (MemoryError tracebacks in
a loop), feed down (connection refused by the named vendor host) and a slow model
(slow-inference warnings); the rule analyzer tells them apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from market_agent.analysis.rules import RuleAnalyzer
from market_agent.logs.base import LogQuery
from market_agent.logs.file import FileLogSource
from market_agent.logs.summary import summarize
from market_agent.models import Notification
from tests.helpers import ManagedProcess, free_port, start_predictor, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def predictor(tmp_path: Path) -> Iterator[tuple[httpx.Client, Path, ManagedProcess]]:
    log = tmp_path / "predictor.log"
    extra = ["--log-file", str(log), "--seed", "3"]
    port = free_port()
    with (
        start_predictor(tmp_path, port, traffic_rps=40, extra_args=extra) as process,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client,
    ):
        yield client, log, process


def log_summary(log: Path, since: datetime) -> dict[str, Any]:
    lines = FileLogSource(log, max_bytes=1 << 20).read(LogQuery(since=since), timeout=5)
    return summarize(lines, source="file", start=since, end=datetime.now(UTC), limit=5000)


def summary_once(log: Path, since: datetime, needle: str, count: int) -> dict[str, Any] | None:
    found = log_summary(log, since)
    hits = sum(s["count"] for s in found["signatures"] if needle in s["signature"])
    return found if hits >= count else None


def alert(name: str) -> Notification:
    labels = {"alertname": name, "job": "market-predictor", "severity": "warning"}
    return Notification.model_validate({"status": "firing", "alerts": [{"labels": labels}]})


@pytest.mark.parametrize(
    ("fault", "needle", "alertname", "issue_type"),
    [
        ("out_of_memory", "MemoryError", "PredictorHighErrorRate", "resource"),
        ("feed_down", "Connection refused", "PredictorStaleMarketData", "data"),
        ("latency", "model inference slow", "PredictorHighLatency", "performance"),
    ],
)
def test_fault_modes_write_their_own_signature(
    predictor: tuple[httpx.Client, Path, ManagedProcess],
    fault: str,
    needle: str,
    alertname: str,
    issue_type: str,
) -> None:
    client, log, process = predictor
    since = datetime.now(UTC) - timedelta(seconds=1)
    assert client.post("/admin/fault", json={"kind": fault}).status_code == 200
    found = wait_until(
        lambda: summary_once(log, since, needle, 3), 20, message=f"{needle} in the log"
    )
    text = " ".join(s["signature"] for s in found["signatures"])
    others = {"MemoryError", "Connection refused", "model inference slow"} - {needle}
    assert not any(other in text for other in others)
    context = {"predictor": {"reachable": True, "healthy": False}, "logs": found}
    judged = RuleAnalyzer().judge(alert(alertname), context)
    assert judged.verdict.issue_type == issue_type
    if fault == "latency":
        assert judged.evidence == ()  # slowness is not a signature that changes the verdict
    else:
        assert judged.verdict.proposed_action == "escalate"
        assert judged.evidence[0].count and judged.evidence[0].count >= 3
    assert needle in process.log_path.read_text()  # the same lines went to stderr
    status = client.get("/status").json()
    assert [f["kind"] for f in status["faults"]] == [fault]
    if fault == "out_of_memory":
        health = client.get("/health")
        assert health.status_code == 503
        assert "model backend out of memory (MemoryError)" in health.json()["reasons"]
        assert client.post("/predict", json={"symbol": "AAPL"}).status_code == 500
    if fault == "feed_down":
        first = status["market_data"]["feed_lag_seconds"]
        wait_until(
            lambda: client.get("/status").json()["market_data"]["feed_lag_seconds"] > first + 1,
            10,
            message="the feed lag to grow",
        )
    if fault == "feed_down":
        assert "marketdata.vendor.example" in judged.evidence[0].summary
