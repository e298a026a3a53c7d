"""`market-agent listen` as a real process: signals, SIGKILL recovery, logs, start-up refusals.

Slow analyses come from a real but unresponsive "LLM" endpoint (a socket that never
answers) with a short `llm.timeout`: each analysis waits that long, then the rule
analyzer answers (the documented fallback).
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli_helpers import run_cli
from tests.helpers import ManagedProcess, free_port, wait_until

EXAMPLE = json.loads(
    (
        Path(__file__).resolve().parents[1] / "examples" / "alerts" / "predictor-down.json"
    ).read_text()
)
TOKEN = "process-test-token-77"


def notification(n: int) -> bytes:
    body = json.loads(json.dumps(EXAMPLE))
    body["alerts"][0]["fingerprint"] = f"fp{n:04d}"
    return json.dumps(body).encode()


class Agent:
    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.tmp_path = tmp_path
        self.audit = tmp_path / "audit.jsonl"
        self.token_file = tmp_path / "token"
        self.token_file.write_text(TOKEN + "\n")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = args
        self.env = env or {}
        self.runs = 0
        self.process: ManagedProcess | None = None

    def start(self, *extra: str, env: dict[str, str] | None = None) -> Agent:
        self.runs += 1
        argv = [
            sys.executable, "-m", "market_agent", "--audit-log", str(self.audit), "listen",
            "--port", str(self.port), "--token-file", str(self.token_file), *self.args, *extra,
        ]  # fmt: skip
        self.log = self.tmp_path / f"listen-{self.runs}.log"
        self.process = ManagedProcess(argv, log_path=self.log, env={**self.env, **(env or {})})
        self.process.start()
        self.process.wait_for_http(f"{self.url}/readyz", timeout=20)
        return self

    def post(self, body: bytes) -> httpx.Response:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        return httpx.post(f"{self.url}/webhook/alerts", content=body, headers=headers, timeout=5)

    def records(self, kind: str) -> list[dict[str, Any]]:
        if not self.audit.exists():
            return []
        lines = self.audit.read_text().splitlines()
        return [r for r in map(json.loads, lines) if r["kind"] == kind]

    def analyses_per_notification(self) -> Counter[str]:
        return Counter(r["notification_id"] for r in self.records("analysis"))

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    created = Agent(tmp_path)
    yield created
    created.stop()


@pytest.fixture
def slow_agent(tmp_path: Path, silent_llm: str) -> Iterator[Agent]:
    env = {
        "MARKET_AGENT_LLM__BASE_URL": silent_llm,
        "MARKET_AGENT_LLM__TIMEOUT": "1",
        "MARKET_AGENT_LLM__MAX_RETRIES": "0",
    }
    created = Agent(tmp_path, "--workers", "1", env=env)
    yield created
    created.stop()


def acknowledge(agent: Agent, count: int) -> list[str]:
    ids = []
    for n in range(count):
        response = agent.post(notification(n))
        assert response.status_code == 200, response.text
        ids.append(response.json()["id"])
    return ids


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_accepting_drains_the_queue_and_exits_0(slow_agent, signum):
    slow_agent.start()
    ids = acknowledge(slow_agent, 2)
    assert slow_agent.analyses_per_notification().total() < 2  # work is still queued
    slow_agent.process.popen.send_signal(signum)
    assert slow_agent.process.wait(30) == 0
    per_id = slow_agent.analyses_per_notification()
    assert all(per_id[i] == 1 for i in ids), per_id
    analyses = slow_agent.records("analysis")
    assert all("timed out" in (a["fallback_reason"] or "") for a in analyses)
    log = slow_agent.log.read_text()
    assert "draining the analysis queue" in log and "Traceback" not in log
    with pytest.raises(httpx.ConnectError):
        slow_agent.post(notification(99))


@pytest.mark.slow
def test_grace_period_over_leaves_the_rest_for_the_next_start(slow_agent):
    slow_agent.start("--grace-period", "0")
    ids = acknowledge(slow_agent, 3)
    slow_agent.process.popen.send_signal(signal.SIGTERM)
    assert slow_agent.process.wait(30) == 0
    assert "left unanalysed" in slow_agent.log.read_text()
    assert slow_agent.analyses_per_notification().total() < 3
    slow_agent.start("--no-llm")
    wait_until(lambda: slow_agent.analyses_per_notification().total() >= 3, 20)
    slow_agent.stop()
    per_id = slow_agent.analyses_per_notification()
    assert all(per_id[i] == 1 for i in ids), per_id


@pytest.mark.slow
def test_sigkill_after_acknowledgements_loses_nothing_and_analyses_once(slow_agent):
    slow_agent.start()
    ids = acknowledge(slow_agent, 5)
    time.sleep(0.5)
    slow_agent.process.kill()
    before = slow_agent.analyses_per_notification()
    assert before.total() < 5, "nothing was left to recover: the test proves nothing"
    assert {r["id"] for r in slow_agent.records("notification")} == set(ids)

    slow_agent.start("--no-llm")
    wait_until(lambda: slow_agent.analyses_per_notification().total() >= 5, 20)
    # A re-send of what was acknowledged before the crash is still a duplicate.
    assert slow_agent.post(notification(0)).json()["status"] == "duplicate"
    metrics = httpx.get(f"{slow_agent.url}/metrics").text
    assert f"market_agent_notifications_recovered_total {5 - before.total()}.0" in metrics
    slow_agent.stop()
    per_id = slow_agent.analyses_per_notification()
    assert set(per_id) == set(ids)
    assert all(count == 1 for count in per_id.values()), per_id
    assert len(slow_agent.records("notification")) == 5


@pytest.mark.slow
def test_json_logs_never_contain_the_token(agent):
    agent.start("--no-llm", "--log-format", "json")
    assert agent.post(notification(1)).status_code == 200
    assert agent.post(b"{}").status_code == 422
    wait_until(lambda: agent.records("analysis"), 10)
    agent.stop()
    text = agent.log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    messages = " ".join(line["message"] for line in lines)
    assert "accepted notification" in messages and "rejected POST" in messages
    assert all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    assert TOKEN not in text


# Start-up refusals (in-process: they fail before serving) ---------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in ("market_agent", "uvicorn")]
    saved = [(lg, lg.handlers[:], lg.level) for lg in loggers]
    yield
    for logger, handlers, level in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["listen", "--host", "0.0.0.0"], "refusing to serve on non-loopback address"),
        (["--no-audit", "listen"], "listen needs the audit log"),
        (["listen", "--token-file", "missing-file"], "cannot read missing-file"),
        (["listen", "--log-format", "xml"], "--log-format: 'xml' is not one of 'text', 'json'"),
    ],
    ids=["non-loopback-no-token", "no-audit", "missing-token-file", "bad-log-format"],
)
def test_refuses_to_start_with_exit_2(args, expected):
    result = run_cli(*args)
    assert result.exit_code == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.usefixtures("restore_logging")
def test_busy_port_exits_2(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("listen", "--port", str(port))
    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


@pytest.mark.usefixtures("restore_logging")
def test_empty_token_file_exits_2(tmp_path):
    (tmp_path / "token").write_text("\n")
    result = run_cli("listen", "--token-file", str(tmp_path / "token"))
    assert result.exit_code == 2
    assert "token is empty" in result.stderr


@pytest.mark.slow
@pytest.mark.usefixtures("restore_logging")
def test_second_listener_on_the_same_audit_log_exits_2(agent):
    agent.start("--no-llm")
    result = run_cli("--audit-log", str(agent.audit), "listen", "--port", str(free_port()))
    assert result.exit_code == 2
    assert "another `market-agent listen`" in result.stderr


def test_listen_help_does_not_import_the_server_stack():
    import subprocess

    code = (
        "import sys; from market_agent.cli import run; run(['listen', '--help']); "
        "bad = {'uvicorn', 'prometheus_client', 'market_agent.listen.http'} & set(sys.modules); "
        "sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert result.returncode == 0, result.stderr


def test_threads_mode_warms_the_analysis_service_before_serving(tmp_path, monkeypatch):
    """`--analysis threads` builds the LLM client before it serves, as the process does."""
    from market_agent.analysis.analyzer import AnalysisService
    from market_agent.listen import http
    from tests.cli_helpers import run_cli

    order: list[str] = []
    monkeypatch.setattr(AnalysisService, "warm", lambda self: order.append("warm"))
    monkeypatch.setattr(http, "run_listener", lambda *a, **k: order.append("serve") or 0)
    audit = str(tmp_path / "audit.jsonl")
    result = run_cli("--audit-log", audit, "listen", "--analysis", "threads", "--port", "0")
    assert result.exit_code == 0, result.stderr
    assert order == ["warm", "serve"]
