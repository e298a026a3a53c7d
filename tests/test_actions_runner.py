"""The pipeline: execute -> verify -> rollback -> verify -> escalate, all linked records."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from market_agent.actions.remediator import Remediator
from market_agent.actions.runner import ActionRequest
from tests.test_actions_guards import (
    ON,
    RecordingNotifier,
    analysis_of,
    auto,
    make_runner,
    notification,
    records,
    touch_action,
)

FAIL = [sys.executable, "-c", "raise SystemExit(3)"]


def steps(tmp_path: Path) -> list[tuple[str, str]]:
    return [(r["step"], r["outcome"]) for r in records(tmp_path, "action")]


def test_verified_run_records_every_step_linked_to_its_cause(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, {**ON, "restart": touch_action(tmp_path / "ran")})
    request = auto()
    result = runner.run(request)
    assert result.outcome == "verified"
    assert result.exit_code == 0
    assert steps(tmp_path) == [
        ("execute", "started"),
        ("execute", "succeeded"),
        ("verify", "passed"),
        ("result", "verified"),
    ]
    for record in records(tmp_path, "action"):
        assert record["action_id"] == result.action_id
        assert record["analysis_id"] == request.analysis.id
        assert record["notification_id"] == "n-1"
        assert record["alertnames"] == ["PredictorDown"]
        assert record["trigger"] == "auto"
    started = records(tmp_path, "action")[0]
    assert started["plan"]["steps"][0]["argv"][-1] == str(tmp_path / "ran")
    assert started["params"]["instance"] == "127.0.0.1:8000"
    final = records(tmp_path, "action")[-1]
    assert final["recover_s"] >= 0


def test_failed_verification_rolls_back_and_escalates(tmp_path: Path) -> None:
    notifier = RecordingNotifier()
    rolled = tmp_path / "rolled-back"
    action = {**touch_action(tmp_path / "ran"), "rollback": touch_action(rolled)}
    action["rollback"].pop("alerts")
    action["rollback"].pop("verify_timeout")
    # unhealthy after the action, healthy after the rollback
    runner = make_runner(
        tmp_path, {**ON, "restart": action}, health=[False] * 3 + [True], notifier=notifier
    )
    runner.verifier.interval = 0.2
    result = runner.run(auto())
    assert result.outcome == "rolled_back"
    assert result.exit_code == 6
    assert rolled.exists()
    assert steps(tmp_path) == [
        ("execute", "started"),
        ("execute", "succeeded"),
        ("verify", "failed"),
        ("rollback", "started"),
        ("rollback", "succeeded"),
        ("rollback_verify", "passed"),
        ("result", "rolled_back"),
    ]
    assert [e["reason"] for e in notifier.events] == ["rolled_back"]
    (escalation,) = records(tmp_path, "escalation")
    assert escalation["action_id"] == result.action_id
    assert escalation["outcome"] == "sent"
    assert escalation["deliveries"][0]["notifier"] == "recorder"


def test_failed_verification_and_rollback_escalates_as_failed(tmp_path: Path) -> None:
    notifier = RecordingNotifier()
    action = {**touch_action(tmp_path / "ran"), "rollback": {"argv": FAIL}}
    runner = make_runner(tmp_path, {**ON, "restart": action}, health=[False], notifier=notifier)
    result = runner.run(auto())
    assert result.outcome == "failed"
    assert result.exit_code == 7
    assert ("rollback", "failed") in steps(tmp_path)
    assert ("rollback_verify", "passed") not in steps(tmp_path)
    assert [e["reason"] for e in notifier.events] == ["action_failed"]
    assert "verify" in notifier.events[0]["message"]


def test_failing_command_skips_verification(tmp_path: Path) -> None:
    runner = make_runner(
        tmp_path, {**ON, "restart": {**touch_action(tmp_path / "x"), "argv": FAIL}}
    )
    result = runner.run(auto())
    assert result.outcome == "failed"
    assert steps(tmp_path) == [
        ("execute", "started"),
        ("execute", "failed"),
        ("result", "failed"),
    ]
    failed = records(tmp_path, "action")[1]
    assert failed["detail"] == "exit 3"
    assert failed["commands"][0]["returncode"] == 3


def test_manual_run_without_alert_uses_configured_params(tmp_path: Path) -> None:
    action = touch_action(tmp_path / "ran")
    action["argv"] = [*action["argv"], "{service}"]
    action["params"] = {"service": "market-predictor"}
    runner = make_runner(tmp_path, {"restart": action})
    result = runner.run(ActionRequest("restart", reason="deploy stuck"))
    assert result.outcome == "verified"
    started = records(tmp_path, "action")[0]
    assert started["plan"]["steps"][0]["argv"][-1] == "market-predictor"
    assert started["reason"] == "deploy stuck"
    assert started["trigger"] == "manual"


def test_result_json_schema(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, {"restart": touch_action(tmp_path / "ran")})
    data = runner.run(ActionRequest("restart")).to_json()
    assert set(data) == {
        "action_id",
        "action",
        "trigger",
        "outcome",
        "exit_code",
        "dry_run",
        "forced",
        "reason",
        "plan",
        "rollback_plan",
        "verification",
        "guards",
        "permissions",
        "steps",
        "escalations",
    }
    assert data["permissions"] == []  # checked by dry runs only
    assert data["exit_code"] == 0
    assert data["verification"] == {"health": True, "query": None, "timeout_s": 0.5}


# Remediator: what listen calls ------------------------------------------------------------


def remediator(tmp_path: Path, actions: dict[str, Any]) -> tuple[Remediator, RecordingNotifier]:
    notifier = RecordingNotifier()
    runner = make_runner(tmp_path, actions, notifier=notifier)
    return Remediator(runner, runner.escalator), notifier


def test_remediator_runs_a_proposed_configured_action(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    handler, _ = remediator(tmp_path, {**ON, "restart": touch_action(marker)})
    note = notification()
    result = handler.handle(analysis_of(note), note)
    assert result is not None and result.outcome == "verified"
    assert marker.exists()


def test_remediator_escalates_when_the_analysis_says_so(tmp_path: Path) -> None:
    handler, notifier = remediator(tmp_path, {**ON, "restart": touch_action(tmp_path / "r")})
    note = notification()
    assert handler.handle(analysis_of(note, action="escalate"), note) is None
    assert [e["reason"] for e in notifier.events] == ["analysis_proposed"]
    assert records(tmp_path, "escalation")[0]["analysis_id"] is not None
    assert records(tmp_path, "action") == []


def test_remediator_ignores_none_and_resolved(tmp_path: Path) -> None:
    handler, notifier = remediator(tmp_path, {**ON, "restart": touch_action(tmp_path / "r")})
    note = notification()
    assert handler.handle(analysis_of(note, action="none"), note) is None
    resolved = notification(status="resolved")
    assert handler.handle(analysis_of(resolved, action="escalate"), resolved) is None
    assert notifier.events == []
    assert records(tmp_path) == []


def test_remediator_escalates_an_unconfigured_immediate_action(tmp_path: Path) -> None:
    handler, notifier = remediator(tmp_path, {**ON})
    note = notification()
    assert handler.handle(analysis_of(note, action="restart"), note) is None
    assert [e["reason"] for e in notifier.events] == ["not_configured"]


def test_remediator_never_raises(tmp_path: Path) -> None:
    handler, _ = remediator(tmp_path, {**ON, "restart": touch_action(tmp_path / "r")})
    (tmp_path / "audit.jsonl").mkdir()  # the audit log cannot be written
    note = notification()
    assert handler.handle(analysis_of(note, action="escalate"), note) is None


class DeadPrometheus:
    def __init__(self) -> None:
        self.asked: list[tuple[str, float]] = []

    def holds(self, expr: str, timeout: float, since: float | None = None) -> tuple[bool, str]:
        self.asked.append((expr, timeout))
        return False, "connection refused"


def test_an_automatic_run_prometheus_cannot_verify_is_not_run_and_escalates(
    tmp_path: Path,
) -> None:
    notifier = RecordingNotifier()
    action = {**touch_action(tmp_path / "ran"), "verify_query": "up == 1", "verify_timeout": 30}
    runner = make_runner(tmp_path, {**ON, "restart": action}, notifier=notifier)
    prometheus = DeadPrometheus()
    runner.verifier.condition = prometheus
    result = runner.run(auto())
    assert result.outcome == "blocked"
    assert not (tmp_path / "ran").exists()
    assert prometheus.asked == [("vector(1)", 5.0)]
    assert [e["reason"] for e in notifier.events] == ["prometheus_unreachable"]
    guards = [r for r in records(tmp_path, "action") if r["step"] == "guard"]
    assert [(g["guard"], g["outcome"]) for g in guards] == [("verification", "blocked")]


def test_a_manual_run_does_not_ask_prometheus_first(tmp_path: Path) -> None:
    action = {**touch_action(tmp_path / "ran"), "verify_query": "up == 1", "verify_health": True}
    runner = make_runner(tmp_path, {"restart": action})
    prometheus = DeadPrometheus()
    runner.verifier.condition = prometheus
    runner.run(ActionRequest("restart"))
    assert (tmp_path / "ran").exists()
    assert ("vector(1)", 5.0) not in prometheus.asked


def test_params_come_only_from_labels_every_firing_alert_shares(tmp_path: Path) -> None:
    action = touch_action(tmp_path / "ran")
    action["argv"] = [*action["argv"], "{instance}", "{job}"]
    action["params"] = {"instance": "default-instance"}
    runner = make_runner(tmp_path, {**ON, "restart": action})
    note = notification()
    other = note.alerts[0].model_copy(
        update={"labels": {**note.alerts[0].labels, "instance": "10.0.0.2:8000"}}
    )
    group = note.model_copy(update={"alerts": [note.alerts[0], other]})
    runner.run(auto(group))
    started = records(tmp_path, "action")[0]
    assert started["plan"]["steps"][0]["argv"][-2:] == ["default-instance", "market-predictor"]
