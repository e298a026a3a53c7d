"""Fault injection: SIGKILL of `market-agent listen` while it is under load.

Expected outcome: after a restart, every notification that got a 2xx before the kill
(and every other one that reached the journal) is analysed exactly once, and the
audit log's hash chain still verifies (`market-agent history verify` exits 0).
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest

from market_agent.audit import AuditLog
from tests.cli_helpers import run_cli
from tests.helpers import wait_until
from tests.test_listen_process import Agent, notification

pytestmark = pytest.mark.slow

SENDERS = 4
#: Acknowledgements before the kill: far more than one slow worker analyses meanwhile.
ACKNOWLEDGED_BEFORE_KILL = 40


def kinds(path: Path, kind: str) -> list[dict]:
    """Records of one kind; a line torn by the kill is skipped, as `listen` does."""
    return [r for r in AuditLog(path).records() if r["kind"] == kind]


def analyses_per_notification(path: Path) -> Counter[str]:
    return Counter(r["notification_id"] for r in kinds(path, "analysis"))


class Load:
    """Threads posting distinct notifications as fast as `listen` answers them."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.acknowledged: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._send, args=(n,), daemon=True) for n in range(SENDERS)
        ]

    def _send(self, sender: int) -> None:
        sent = 0
        while not self._stop.is_set():
            sent += 1
            try:
                response = self.agent.post(notification(sender * 100_000 + sent))
            except httpx.HTTPError:
                continue  # killed: the request may or may not have been journaled
            if response.status_code == 200:
                with self._lock:
                    self.acknowledged.append(response.json()["id"])

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)


def test_sigkill_under_load_every_acknowledged_notification_is_analysed_exactly_once(
    tmp_path: Path,
    silent_llm: str,
) -> None:
    # Analyses wait for an LLM that never answers (1 s, then the rules): a queue builds up.
    env = {
        "MARKET_AGENT_LLM__BASE_URL": silent_llm,
        "MARKET_AGENT_LLM__TIMEOUT": "1",
        "MARKET_AGENT_LLM__MAX_RETRIES": "0",
    }
    agent = Agent(tmp_path, "--workers", "1", env=env)
    try:
        agent.start()
        with Load(agent) as load:
            wait_until(
                lambda: len(load.acknowledged) >= ACKNOWLEDGED_BEFORE_KILL,
                30,
                message="acknowledgements under load",
            )
            agent.process.kill()  # SIGKILL while the senders are still sending
        acknowledged = load.acknowledged
        assert len(set(acknowledged)) == len(acknowledged)
        assert analyses_per_notification(agent.audit).total() < len(acknowledged), (
            "nothing was left to recover: the test proves nothing"
        )

        agent.start("--no-llm")
        journaled = {r["id"] for r in kinds(agent.audit, "notification")}
        assert set(acknowledged) <= journaled  # acknowledged means on disk
        wait_until(
            lambda: set(analyses_per_notification(agent.audit)) >= journaled,
            30,
            message="every journaled notification analysed after the restart",
        )
    finally:
        agent.stop()

    per_notification = analyses_per_notification(agent.audit)
    assert set(per_notification) == journaled
    assert set(per_notification.values()) == {1}, "analysed more than once"
    report = AuditLog(agent.audit).verify()
    assert report.ok, report
    assert report.records == len(agent.audit.read_bytes().splitlines())
    assert run_cli("--audit-log", str(agent.audit), "history", "verify").exit_code == 0
