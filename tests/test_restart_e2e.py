"""End to end with real servers and auto-remediation on: predictor -> Prometheus ->
Alertmanager -> listen -> analysis -> guarded restart (command backend) -> verified ->
resolved; a second kill inside the cooldown is not restarted but escalated.

The listener is the real command, `market-agent --config ... listen --auto-remediate
--no-llm`, which analyses (and remediates) in its analysis process, a child of its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import MonitoringStack, free_port, start_monitoring_stack, wait_until
from tests.test_prometheus_configs import WebhookRecorder
from tests.test_restart_real import pidfile, restart_argv  # noqa: F401 - pidfile is a fixture

pytestmark = pytest.mark.slow

TOKEN = "e2e-remediation-token-91ab"


def records(path: Path, kind: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == kind]


def action_steps(path: Path, step: str, outcome: str) -> list[dict[str, Any]]:
    return [r for r in records(path, "action") if (r["step"], r["outcome"]) == (step, outcome)]


def write_config(
    tmp_path: Path, monitoring: MonitoringStack, *, audit: Path, pid_path: Path, sink_port: int
) -> Path:
    """The listener's config: port, token file, audit log, restart action, escalations."""
    ports, config = monitoring.ports, tmp_path / "market-agent.toml"
    config.write_text(
        f'[predictor]\nurl = "http://127.0.0.1:{ports["predictor"]}"\ntimeout = 2\n'
        f'[alertmanager]\nurl = "http://127.0.0.1:{ports["alertmanager"]}"\n'
        f'[audit]\npath = "{audit}"\nfsync = false\n'
        f'[listen]\nport = {ports["agent"]}\ntoken_file = "{monitoring.token_file}"\n'
        f'[actions]\nauto_remediate = true\ncooldown = "10m"\npause_file = "{tmp_path / "p"}"\n'
        f"[actions.restart]\nargv = {json.dumps(restart_argv(tmp_path, pid_path))}\n"
        'alerts = ["PredictorDown"]\ntimeout = 30\nverify_timeout = 30\n'
        f'[notifiers.oncall]\nurl = "http://127.0.0.1:{sink_port}/escalations"\n'
    )
    return config


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as exit_stack:
        yield exit_stack


def test_kill_restart_verify_resolve_then_cooldown_escalates(
    tmp_path: Path,
    stack: ExitStack,
    pidfile: Path,  # noqa: F811 - the fixture
) -> None:
    sink_port = free_port()
    audit = tmp_path / "audit.jsonl"

    def listen_argv(monitoring: MonitoringStack) -> list[str]:
        pidfile.write_text(str(monitoring.predictor.pid))  # before anything may restart it
        config = write_config(
            tmp_path, monitoring, audit=audit, pid_path=pidfile, sink_port=sink_port
        )
        market_agent = [sys.executable, "-m", "market_agent", "--config", str(config)]
        return [*market_agent, "listen", "--auto-remediate", "--no-llm"]

    sink = stack.enter_context(WebhookRecorder(sink_port))
    monitoring = start_monitoring_stack(
        stack, tmp_path, token=TOKEN, traffic_rps=5, agent_argv=listen_argv
    )
    ports, predictor, agent = monitoring.ports, monitoring.predictor, monitoring.agent
    prom = monitoring.urls["prometheus"]

    def predictor_up() -> bool:
        query = {"query": 'up{job="market-predictor"} == 1'}
        return bool(httpx.get(f"{prom}/api/v1/query", params=query).json()["data"]["result"])

    wait_until(predictor_up, 20, message="Prometheus scraping the predictor")

    # First kill: restarted automatically, verified, then resolved.
    predictor.kill()
    (verified,) = wait_until(
        lambda: action_steps(audit, "result", "verified"), 90, message="a verified restart"
    )
    assert verified["trigger"] == "auto"
    assert verified["alertnames"] == ["PredictorDown"]
    analysis = next(a for a in records(audit, "analysis") if a["id"] == verified["analysis_id"])
    assert analysis["proposed_action"] == "restart"
    new_pid = int(pidfile.read_text())
    assert new_pid != predictor.pid
    assert httpx.get(f"http://127.0.0.1:{ports['predictor']}/health").status_code == 200
    wait_until(
        lambda: [
            n
            for n in records(audit, "notification")
            if n["status"] == "resolved" and "PredictorDown" in n["alertnames"]
        ],
        60,
        message="the resolved PredictorDown notification",
    )
    history = [sys.executable, "-m", "market_agent", "--audit-log", str(audit), "history"]
    stats = subprocess.run(
        [*history, "stats", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [json.loads(line) for line in stats.stdout.splitlines()]
    assert [(r["alertname"], r["action"], r["attempts"], r["successes"]) for r in rows] == [
        ("PredictorDown", "restart", 1, 1)
    ]

    # Second kill inside the cooldown: not restarted, escalated.
    os.kill(new_pid, signal.SIGKILL)
    (blocked,) = wait_until(
        lambda: [r for r in action_steps(audit, "guard", "blocked") if r["guard"] == "cooldown"],
        60,
        message="the cooldown blocking a second restart",
    )[:1]
    wait_until(lambda: sink.requests, 20, message="an escalation at the sink")
    escalation = sink.requests[0]["json"]
    assert escalation["reason"] == "guard_blocked"
    assert escalation["action_id"] == blocked["action_id"]
    assert "cooldown" in escalation["message"]
    assert len(action_steps(audit, "execute", "started")) == 1
    assert "Traceback" not in agent.log_tail(200)
