"""SIGKILL of `listen`, its analysis process and a running action; the next start reconciles.

Real processes: a `command` restart action that writes its PID and sleeps, a
listener with --auto-remediate, a webhook notifier served by a local HTTP server.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port
from tests.test_listen_process import EXAMPLE, Agent

pytestmark = pytest.mark.slow

SLEEPER = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)"


class Webhook:
    """A local JSON webhook receiver that keeps every body it gets."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    server = Webhook()
    yield server
    server.close()


def config(tmp_path: Path, pid_file: Path, webhook_url: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""
[predictor]
url = "http://127.0.0.1:{free_port()}"
timeout = 0.5

[actions]
recheck_alertmanager = false
max_executions = 1

[actions.restart]
backend = "command"
argv = [{json.dumps(sys.executable)}, "-c", {json.dumps(SLEEPER)}, {json.dumps(str(pid_file))}]
timeout = "5m"
alerts = ["PredictorDown"]

[notifiers.oncall]
type = "webhook"
url = "{webhook_url}"
attempts = 1
"""
    )
    return path


def wait_for(check: Any, what: str, agent: Agent, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what}; log:\n{agent.log.read_text()[-3000:]}")


def kill_everything(agent: Agent, pid_file: Path) -> None:
    """SIGKILL the listener's process group (it and its analysis process), then the action."""
    assert agent.process is not None
    os.killpg(agent.process.pid, signal.SIGKILL)
    agent.process.kill()
    os.kill(int(pid_file.read_text()), signal.SIGKILL)  # the action runs in its own session


def test_an_action_killed_mid_run_is_reconciled_and_escalated_at_the_next_start(
    tmp_path: Path, webhook: Webhook
) -> None:
    pid_file = tmp_path / "action.pid"
    env = {"MARKET_AGENT_CONFIG": str(config(tmp_path, pid_file, webhook.url))}
    agent = Agent(tmp_path, "--auto-remediate", env=env).start()
    try:
        assert agent.post(json.dumps(EXAMPLE).encode()).status_code == 200
        wait_for(lambda: pid_file.exists() and pid_file.read_text(), "the action never ran", agent)
        kill_everything(agent, pid_file)
        steps = [(r["step"], r["outcome"]) for r in agent.records("action")]
        assert steps == [("execute", "started")]  # the kill left it without a result
        assert webhook.bodies == []

        agent.start()  # /readyz answers: reconciliation happened before the listener
        results = [r for r in agent.records("action") if r["step"] == "result"]
    finally:
        agent.stop()
    (started,) = [r for r in agent.records("action") if r["step"] == "execute"]
    (result,) = results
    assert result["outcome"] == "interrupted"
    assert result["action_id"] == started["action_id"]
    assert result["analysis_id"] == started["analysis_id"]
    (escalation,) = agent.records("escalation")
    assert escalation["reason"] == "action_interrupted"
    assert escalation["outcome"] == "sent"
    assert escalation["action_id"] == started["action_id"]
    (event,) = webhook.bodies
    assert event["reason"] == "action_interrupted"
    assert event["action_id"] == started["action_id"]
    assert event["alertnames"] == ["PredictorDown"]
