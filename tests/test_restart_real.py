"""Real processes: the demo predictor restarted through the `command` backend, an
escalation to a local HTTP sink (the webhook recorder of the Prometheus config
tests), single flight and the breaker across processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import REPO_ROOT, free_port, start_predictor, wait_until
from tests.test_prometheus_configs import WebhookRecorder

pytestmark = pytest.mark.slow

#: Stops the predictor whose PID is in PIDFILE (waiting for its port to close), then
#: starts a new one, detached, and writes its PID there. Argument: HOST:PORT.
RESTART_SCRIPT = """
import os, signal, socket, subprocess, sys, time
host, port = sys.argv[1].rsplit(":", 1)
pidfile, log, repo = sys.argv[2:5]
try:
    os.kill(int(open(pidfile).read()), signal.SIGTERM)
except (FileNotFoundError, ValueError, ProcessLookupError):
    pass
deadline = time.time() + 15
while time.time() < deadline:
    with socket.socket() as s:
        if s.connect_ex((host, int(port))) != 0:
            break
    time.sleep(0.05)
with open(log, "ab") as out:
    child = subprocess.Popen(
        [sys.executable, "-m", "examples.predictor", "--host", host, "--port", port,
         "--traffic-rps", "5", "--log-level", "warning"],
        cwd=repo, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
open(pidfile, "w").write(str(child.pid))
print("started predictor", child.pid)
"""


@pytest.fixture
def pidfile(tmp_path: Path) -> Iterator[Path]:
    """Predictors started by the restart script are stopped by their PID at teardown."""
    path = tmp_path / "predictor.pid"
    yield path
    if path.exists():
        pid = int(path.read_text())
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)


def restart_argv(tmp_path: Path, pidfile: Path) -> list[str]:
    script = tmp_path / "restart_predictor.py"
    script.write_text(RESTART_SCRIPT)
    log = tmp_path / "restarted-predictor.log"
    return [sys.executable, str(script), "{instance}", str(pidfile), str(log), str(REPO_ROOT)]


def write_config(tmp_path: Path, port: int, body: str) -> Path:
    path = tmp_path / "market-agent.toml"
    path.write_text(
        f'[predictor]\nurl = "http://127.0.0.1:{port}"\ntimeout = 2\n'
        f'[actions]\npause_file = "{tmp_path / "paused"}"\n{body}'
    )
    return path


def market_agent(
    config: Path, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "market_agent", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=config.parent,
    )


def audit(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "home" / "state" / "market-agent" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_real_restart_of_the_demo_predictor_is_verified(tmp_path: Path, pidfile: Path) -> None:
    port = free_port()
    with start_predictor(tmp_path, port, traffic_rps=5) as original:
        pidfile.write_text(str(original.pid))
        argv = json.dumps(restart_argv(tmp_path, pidfile))
        config = write_config(
            tmp_path,
            port,
            f'[actions.restart]\nargv = {argv}\nparams = {{ instance = "127.0.0.1:{port}" }}\n'
            "timeout = 30\nverify_timeout = 30\n",
        )
        result = market_agent(config, "restart", "--yes", "--reason", "test", "--json")
        assert result.returncode == 0, result.stderr + result.stdout
        data = json.loads(result.stdout)
        assert data["outcome"] == "verified"
        assert data["plan"]["steps"][0]["argv"][2] == f"127.0.0.1:{port}"
        original.wait(10)  # the old process was stopped by the action
        new_pid = int(pidfile.read_text())
        assert new_pid != original.pid
        assert Path(f"/proc/{new_pid}").exists()
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        assert health.json()["status"] == "healthy"
    steps = [(r["step"], r["outcome"]) for r in audit(tmp_path)]
    assert steps == [
        ("execute", "started"),
        ("execute", "succeeded"),
        ("verify", "passed"),
        ("result", "verified"),
    ]


def test_failed_verification_rolls_back_and_escalates_to_a_sink(
    tmp_path: Path, pidfile: Path
) -> None:
    port = free_port()  # nothing listens: the "restart" below does not start anything
    sink_port = free_port()
    sink_url = f"http://127.0.0.1:{sink_port}"
    with WebhookRecorder(sink_port) as sink:
        rollback = json.dumps(restart_argv(tmp_path, pidfile))
        config = write_config(
            tmp_path,
            port,
            f"[actions.restart]\nargv = {json.dumps([sys.executable, '-c', 'pass'])}\n"
            f'params = {{ instance = "127.0.0.1:{port}" }}\nverify_timeout = 8\n'
            f"[actions.restart.rollback]\nargv = {rollback}\ntimeout = 30\n"
            f'[notifiers.hook]\nurl = "{sink_url}/hook"\n'
            f'[notifiers.chat]\ntype = "slack"\nurl = "{sink_url}/slack"\n',
        )
        result = market_agent(config, "restart", "--yes", "--json")
        assert result.returncode == 6, result.stderr + result.stdout
        assert json.loads(result.stdout)["outcome"] == "rolled_back"
        wait_until(lambda: len(sink.requests) == 2, 10, message="two escalations")
    bodies = {request["path"]: request["json"] for request in sink.requests}
    assert bodies["/hook"]["reason"] == "rolled_back"
    assert bodies["/hook"]["action_id"] == json.loads(result.stdout)["action_id"]
    assert "restart failed" in bodies["/slack"]["text"]
    (escalation,) = [r for r in audit(tmp_path) if r["kind"] == "escalation"]
    assert escalation["outcome"] == "sent"
    assert sink_url not in json.dumps(escalation)


def test_two_concurrent_restarts_run_exactly_once(tmp_path: Path) -> None:
    slow = [sys.executable, "-c", "import time; time.sleep(4)"]
    config = write_config(
        tmp_path,
        free_port(),
        f"[actions.restart]\nargv = {json.dumps(slow)}\nverify_health = false\n",
    )
    argv = [sys.executable, "-m", "market_agent", "--config", str(config), "restart", "--yes"]
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
        for _ in range(2)
    ]
    try:
        codes = sorted(p.wait(60) for p in procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stdout.close()  # type: ignore[union-attr]
            p.stderr.close()  # type: ignore[union-attr]
    assert codes == [0, 5]
    records = audit(tmp_path)
    assert sum(r["step"] == "execute" and r["outcome"] == "started" for r in records) == 1
    assert [r["guard"] for r in records if r["step"] == "guard"] == ["single_flight"]


def test_circuit_breaker_holds_across_processes(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        free_port(),
        "max_executions = 2\n"
        f"[actions.restart]\nargv = {json.dumps([sys.executable, '-c', 'pass'])}\n"
        "verify_health = false\n",
    )
    codes = [market_agent(config, "restart", "--yes").returncode for _ in range(3)]
    assert codes == [0, 0, 5]
    blocked = [r for r in audit(tmp_path) if r["step"] == "guard"]
    assert [r["guard"] for r in blocked] == ["circuit_breaker"]
