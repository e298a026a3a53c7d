"""Soak: about two minutes of steady webhook load with duplicates and bad requests.

Excluded from the quick run (`-m "not slow and not soak"`), run in CI. Checks that
the listener's memory stays flat, nothing acknowledged is lost, and its /metrics
agree with the audit log's counts. Set MARKET_AGENT_SOAK_SECONDS to shorten it.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from market_agent.audit import AuditLog
from tests.test_listen_process import EXAMPLE, TOKEN, Agent

pytestmark = [pytest.mark.slow, pytest.mark.soak]

DURATION = float(os.environ.get("MARKET_AGENT_SOAK_SECONDS", "110"))
RATE = 60  # notifications per second: steady, well under capacity
#: Allowed RSS growth between the end of warm-up and the end of the run.
RSS_GROWTH_LIMIT_MB = 25.0


def body(n: int) -> bytes:
    notification = json.loads(json.dumps(EXAMPLE))
    notification["alerts"][0]["fingerprint"] = f"soak{n:08d}"
    notification["alerts"][0]["annotations"]["description"] = f"soak message {n} " * 5
    return json.dumps(notification).encode()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def metric(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name) + (re.escape("{" + labels + "}") if labels else "") + r" (\S+)"
    found = re.search(r"^" + pattern + "$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_steady_load_memory_flat_nothing_lost_metrics_agree(tmp_path: Path) -> None:
    agent = Agent(tmp_path).start()
    sent = Counter[str]()
    accepted: set[str] = set()
    samples: list[tuple[float, float]] = []
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        with httpx.Client(base_url=agent.url, timeout=10) as client:
            started, n = time.monotonic(), 0
            while (elapsed := time.monotonic() - started) < DURATION:
                n += 1
                kind, response = _send(client, auth, n)
                sent[kind] += 1
                if kind == "new":
                    assert response.status_code == 200, response.text
                    accepted.add(response.json()["id"])
                elif kind == "duplicate":
                    assert response.json()["status"] == "duplicate"
                if n % RATE == 0:
                    samples.append((elapsed, rss_mb(agent.process.pid)))
                time.sleep(max(0.0, started + n / RATE - time.monotonic()))
            time.sleep(1.0)  # let the background analysis catch up
            metrics = client.get("/metrics").text
    finally:
        agent.stop()

    warm = [rss for at, rss in samples if at >= min(20.0, DURATION / 4)]
    assert warm, "no RSS samples after warm-up"
    assert max(warm) - warm[0] < RSS_GROWTH_LIMIT_MB, samples

    records = [json.loads(line) for line in agent.audit.read_text().splitlines()]
    notifications = {r["id"] for r in records if r["kind"] == "notification"}
    analysed = Counter(r["notification_id"] for r in records if r["kind"] == "analysis")
    assert accepted <= notifications, "an acknowledged notification is missing"
    assert set(analysed) == notifications and set(analysed.values()) == {1}
    assert AuditLog(agent.audit).verify().ok

    received = metric(metrics, "market_agent_notifications_received_total", 'status="firing"')
    assert received == len(notifications)
    assert metric(metrics, "market_agent_notifications_duplicate_total") == sent["duplicate"]
    rejected_bad_json = metric(
        metrics, "market_agent_notifications_rejected_total", 'reason="bad_json"'
    )
    rejected_auth = metric(
        metrics, "market_agent_notifications_rejected_total", 'reason="unauthorized"'
    )
    assert rejected_bad_json == sent["bad_json"]
    assert rejected_auth == sent["unauthorized"]


def _send(client: httpx.Client, auth: dict[str, str], n: int) -> tuple[str, httpx.Response]:
    if n % 10 == 0:  # Alertmanager's re-send of an earlier group
        # n - 3 ends in 7: always one sent as "new" before.
        return "duplicate", client.post("/webhook/alerts", content=body(n - 3), headers=auth)
    if n % 25 == 0:
        return "bad_json", client.post("/webhook/alerts", content=b"{oops", headers=auth)
    if n % 40 == 0:
        return "unauthorized", client.post("/webhook/alerts", content=body(n))
    return "new", client.post("/webhook/alerts", content=body(n), headers=auth)
