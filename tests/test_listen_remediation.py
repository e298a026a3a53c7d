"""`listen` wires every analysis into the guarded action pipeline (a real process)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import free_port
from tests.test_listen_process import EXAMPLE, Agent

pytestmark = pytest.mark.slow


def config(tmp_path: Path, marker: Path) -> Path:
    script = f"open({str(marker)!r}, 'a').write('restarted {{instance}}\\n')"
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""
[predictor]
url = "http://127.0.0.1:{free_port()}"
timeout = 0.5

[actions]
recheck_alertmanager = false
cooldown = "1s"

[actions.restart]
backend = "command"
argv = [{json.dumps(sys.executable)}, "-c", {json.dumps(script)}]
alerts = ["PredictorDown"]
verify_timeout = "1s"
"""
    )
    return path


def wait_for_result(agent: Agent, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        results = [r for r in agent.records("action") if r.get("step") == "result"]
        if results:
            return results[0]
        time.sleep(0.2)
    raise AssertionError(f"no action result; log:\n{agent.log.read_text()[-3000:]}")


@pytest.mark.parametrize("auto", [False, True], ids=["safety-mode", "auto-remediate"])
def test_listen_acts_only_with_auto_remediate(tmp_path: Path, auto: bool) -> None:
    marker = tmp_path / "restarted.txt"
    env = {"MARKET_AGENT_CONFIG": str(config(tmp_path, marker))}
    agent = Agent(tmp_path, *(["--auto-remediate"] if auto else []), env=env).start()
    try:
        assert agent.post(json.dumps(EXAMPLE).encode()).status_code == 200
        result = wait_for_result(agent)
    finally:
        agent.stop()
    analysis = agent.records("analysis")[0]
    assert result["analysis_id"] == analysis["id"]
    if auto:
        assert marker.read_text() == "restarted 127.0.0.1:8000\n"
        assert result["outcome"] in ("failed", "rolled_back")  # nothing answers /health
    else:
        assert not marker.exists()
        assert result["outcome"] == "blocked"
        guards = [r for r in agent.records("action") if r.get("step") == "guard"]
        assert any(g.get("guard") == "safety_mode" for g in guards)


def warnings_in(log: str) -> list[str]:
    return [line for line in log.splitlines() if " WARNING " in line]


def test_listen_warns_when_safety_mode_blocks_and_the_escalation_reaches_nobody(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "restarted.txt"
    env = {"MARKET_AGENT_CONFIG": str(config(tmp_path, marker))}  # no [notifiers]
    agent = Agent(tmp_path, env=env).start()
    try:
        assert agent.post(json.dumps(EXAMPLE).encode()).status_code == 200
        wait_for_result(agent)
        wait_for_escalation(agent)
    finally:
        agent.stop()
    (escalation,) = agent.records("escalation")
    assert (escalation["reason"], escalation["outcome"]) == ("guard_blocked", "no_notifiers")
    warnings = warnings_in(agent.log.read_text())
    blocked = [w for w in warnings if "safety mode" in w]
    nobody = [w for w in warnings if "reached nobody" in w]
    assert len(blocked) == 1 and '["PredictorDown"]' in blocked[0]
    assert len(nobody) == 1 and '["PredictorDown"]' in nobody[0]
    assert "guard_blocked" in nobody[0]


def test_listen_records_an_unconfigured_action_as_not_configured(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f'[predictor]\nurl = "http://127.0.0.1:{free_port()}"\ntimeout = 0.5\n')
    agent = Agent(tmp_path, env={"MARKET_AGENT_CONFIG": str(path)}).start()
    try:
        assert agent.post(json.dumps(EXAMPLE).encode()).status_code == 200
        wait_for_escalation(agent)
    finally:
        agent.stop()
    (escalation,) = agent.records("escalation")
    assert (escalation["reason"], escalation["outcome"]) == ("not_configured", "no_notifiers")
    assert agent.records("action") == []
    warnings = warnings_in(agent.log.read_text())
    assert any("is not configured" in w and '["PredictorDown"]' in w for w in warnings)
    assert any("reached nobody" in w and "not_configured" in w for w in warnings)


def wait_for_escalation(agent: Agent, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not agent.records("escalation"):
        if time.monotonic() > deadline:
            raise AssertionError(f"no escalation; log:\n{agent.log.read_text()[-3000:]}")
        time.sleep(0.2)
    time.sleep(0.3)  # the warning is logged right after the record
